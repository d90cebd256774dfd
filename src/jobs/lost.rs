//! A submit whose answer was lost (a timeout, a cut connection, a 5xx, an
//! unreadable success) may have created the job, and the API bills it. So
//! before the identifiers are submitted again, the API's list of this
//! key's jobs (`GET /batch`, newest first) is read, and every listed job
//! that no journal owns gets a verdict by what it holds, never by size or
//! time alone ([`judge_listed`], [`judge_rows`]):
//!
//! - *not ours*: a different `identifier_count`, created clearly before
//!   the send, failed, or completed without results (neither is billed,
//!   so submitting over it costs nothing), or a result file holding an
//!   identifier the batch does not;
//! - *ours*: a result file (every part; downloads are free) whose
//!   identifiers, by the key results are matched with, are all the
//!   batch's, of a job of the batch's size;
//! - *undecided*: still running, or its file unreadable.
//!
//! The job is submitted again only when a listing that started after the
//! request could still have created a job (send + `api.request_timeout`
//! when no answer came, + `api.clock_skew`) is complete (it reached a job
//! created clearly before the send, or one a journal accepted before it,
//! or the list's end) and finds neither ours nor undecided. Undecided for
//! `api.job_timeout`, the submit counts as a job that timed out.

use std::collections::HashSet;
use std::time::Duration;

use tracing::{info, warn};

use super::collect::FETCHES;
use super::results::ResultRow;
use super::{now_ms, JobContext};
use crate::api::{Endpoint, JobState, JobStatus};
use crate::decode::match_key;
use crate::lifecycle::Record;
use crate::model::{IdentifierType, JobSpec};

/// Jobs per page of the list.
const PAGE: u32 = 100;
/// Pages read at most; a job beyond them is undecided.
const MAX_PAGES: usize = 10;
/// The first and the longest pause between two listings.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// What a lost submit came to.
#[derive(Debug)]
pub(super) enum Resolved {
    /// This listed job is the one it created.
    Ours(JobStatus),
    /// It created nothing: submit again.
    NotCreated,
    /// Still undecided after `api.job_timeout`: treated as a job that timed out.
    Undecided(&'static str),
}

/// A listed job, judged without its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    /// It and everything after it (older) cannot be ours: the listing is complete.
    Stop,
    /// Not ours (or another job's, by a journal).
    NotOurs,
    /// Still running: undecided.
    Running,
    /// Completed with results: its file tells.
    ReadFile,
}

/// Judges listed `job` for a lost submit of `size` identifiers that
/// `sender` sent at `sent_at_ms`; `known` says whether a journal owns a
/// batch id: when it was accepted (ms, 0 when unknown) and by which
/// member. Size and time only exclude. A job a journal owns that was
/// accepted before the send (by the sender's own clock; by another
/// member's, more than the skew before) was created before it: everything
/// listed after it is older still.
pub(crate) fn judge_listed(
    job: &JobStatus,
    size: usize,
    sent_at_ms: i64,
    sender: &str,
    skew: Duration,
    known: impl Fn(&str) -> Option<(i64, String)>,
) -> Listed {
    let before = sent_at_ms - skew.as_millis() as i64;
    if job.created_at.is_some_and(|t| t.timestamp_millis() < before) {
        return Listed::Stop;
    }
    let Some(batch_id) = job.batch_id.as_deref() else {
        return Listed::NotOurs;
    };
    if let Some((accepted_ms, owner)) = known(batch_id) {
        let earlier = if owner == sender {
            accepted_ms <= sent_at_ms
        } else {
            accepted_ms < before
        };
        return if accepted_ms > 0 && earlier {
            Listed::Stop
        } else {
            Listed::NotOurs
        };
    }
    if job.identifier_count.is_some_and(|n| n as usize != size) {
        return Listed::NotOurs;
    }
    match job.state {
        JobState::Failed => Listed::NotOurs,
        JobState::Running => Listed::Running,
        JobState::Completed if job.result_count == Some(0) => Listed::NotOurs,
        JobState::Completed => Listed::ReadFile,
    }
}

/// What a job's result file says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// Every row is one of the batch's identifiers, and every identifier has a row.
    Ours,
    /// A row names an identifier the batch does not hold.
    NotOurs,
    /// Every row is the batch's, but some identifiers have none (a file
    /// missing lines): read again; after every read, ours.
    Short,
    /// Damaged or empty: read again.
    Unreadable,
}

/// Judges a result file by its rows against the batch `kind`/`ids`, by the
/// key results are matched with ([`match_key`]).
pub(crate) fn judge_rows(rows: &[ResultRow], damaged: bool, kind: IdentifierType, ids: &[String]) -> Content {
    let batch: HashSet<String> = ids.iter().map(|i| match_key(Some(kind), i)).collect();
    let mut seen = HashSet::with_capacity(rows.len());
    for r in rows {
        let key = match_key(Some(r.kind.unwrap_or(kind)), r.matched_on.trim());
        if !batch.contains(&key) {
            return Content::NotOurs;
        }
        seen.insert(key);
    }
    if damaged || rows.is_empty() {
        Content::Unreadable
    } else if seen.len() == batch.len() {
        Content::Ours
    } else {
        Content::Short
    }
}

/// What one listing found.
enum Found {
    Ours(JobStatus),
    /// Complete, and nothing ours or undecided in it.
    Nothing,
    Undecided(&'static str),
}

impl JobContext {
    /// Resolves a lost submit of `rec`'s identifiers sent at `sent_at_ms`.
    pub(super) async fn resolve_lost(
        &self,
        seq: u64,
        spec: &JobSpec,
        rec: &Record,
        sent_at_ms: i64,
        unanswered: bool,
    ) -> Resolved {
        let skew = self.cfg.clock_skew;
        let wait_out = if unanswered {
            self.cfg.request_timeout
        } else {
            Duration::ZERO
        };
        let decide_after = sent_at_ms + (wait_out + skew).as_millis() as i64;
        let give_up_at = sent_at_ms + self.cfg.job_timeout.as_millis() as i64;
        let mut pause = FIRST_PAUSE;
        let mut rounds = 0u32;
        loop {
            let listed_at = now_ms();
            let why = match self.look(seq, spec, sent_at_ms, &rec.owner).await {
                Found::Ours(status) => {
                    info!(
                        batch_id = status.batch_id.as_deref().unwrap_or(""),
                        rounds, "the API created the job of a lost submit answer: its results prove it; using that job"
                    );
                    return Resolved::Ours(status);
                }
                Found::Nothing if listed_at >= decide_after => {
                    info!(
                        size = spec.ids.len(),
                        rounds,
                        earlier_jobs = rec.earlier.len(),
                        "a lost submit created no job: submitting again"
                    );
                    self.metrics.lost_submit("not_created");
                    return Resolved::NotCreated;
                }
                Found::Nothing => "the request may still create the job",
                Found::Undecided(why) => why,
            };
            rounds += 1;
            let now = now_ms();
            if now >= give_up_at {
                warn!(
                    size = spec.ids.len(),
                    why, "a lost submit stayed undecided for api.job_timeout; treated as a job that timed out"
                );
                self.metrics.lost_submit("undecided");
                return Resolved::Undecided(why);
            }
            let until_decision = Duration::from_millis((decide_after - now).max(0) as u64);
            let wait = if why == "the request may still create the job" {
                until_decision.max(Duration::from_millis(10))
            } else {
                pause
            };
            tracing::debug!(why, ?wait, "lost submit undecided");
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// One listing, newest first, judged job by job.
    async fn look(&self, seq: u64, spec: &JobSpec, sent_at_ms: i64, sender: &str) -> Found {
        let mut cursor: Option<String> = None;
        let mut undecided = None;
        for _ in 0..MAX_PAGES {
            let page = match self
                .call(Endpoint::List, seq, || self.api.list(PAGE, cursor.as_deref()))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot list this key's jobs; a lost submit stays undecided");
                    return Found::Undecided("the job list cannot be read");
                }
            };
            if page.unreadable > 0 {
                undecided = Some("the job list has items that cannot be read");
            }
            for job in page.jobs {
                match judge_listed(&job, spec.ids.len(), sent_at_ms, sender, self.cfg.clock_skew, |b| {
                    self.store.batch_known(b)
                }) {
                    Listed::Stop => return undecided.map_or(Found::Nothing, Found::Undecided),
                    Listed::NotOurs => {}
                    Listed::Running => undecided = Some("a job of the same size is still running"),
                    Listed::ReadFile => match self.read_candidate(seq, spec, &job).await {
                        Content::Ours | Content::Short => return Found::Ours(job),
                        Content::NotOurs => {}
                        Content::Unreadable => undecided = Some("a job of the same size has an unreadable file"),
                    },
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return undecided.map_or(Found::Nothing, Found::Undecided),
            }
        }
        Found::Undecided("the job list is longer than the pages read")
    }

    /// Reads a candidate's result file (again, while it is short or
    /// damaged, up to [`FETCHES`] times) and judges it.
    async fn read_candidate(&self, seq: u64, spec: &JobSpec, job: &JobStatus) -> Content {
        let Some(batch_id) = job.batch_id.as_deref() else {
            return Content::NotOurs;
        };
        let deadline = std::time::Instant::now() + self.cfg.request_timeout * 4;
        let mut status = job.clone();
        let mut rows: Vec<ResultRow> = Vec::new();
        let mut verdict = Content::Unreadable;
        for fetch in 1..=FETCHES {
            let fetched = match self.fetch(seq, batch_id, &mut status, deadline).await {
                Ok(f) => f,
                Err(e) => {
                    warn!(batch_id, error = %e, "cannot read a candidate's results");
                    return Content::Unreadable;
                }
            };
            let damaged = fetched.damaged;
            rows.extend(fetched.rows);
            verdict = judge_rows(&rows, damaged, spec.kind, &spec.ids);
            match verdict {
                Content::Ours | Content::NotOurs => return verdict,
                Content::Short | Content::Unreadable if fetch < FETCHES => {
                    status = match self.fresh_links(seq, batch_id, deadline).await {
                        Ok(s) => s,
                        Err(_) => return Content::Unreadable,
                    };
                }
                _ => {}
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests;

//! Collecting a completed job's results. Downloads are free, so nothing is
//! paid again because of one: an expired link is renewed by a fresh status
//! request, a transient error is retried until `api.job_timeout`, and a
//! damaged file (truncated, corrupt) or one missing identifiers is fetched
//! again (fresh links) up to [`FETCHES`] times. Only then do the complete
//! lines it has count, and only the identifiers still missing go back to
//! the dispatcher (to be submitted again).

use std::collections::HashMap;
use std::time::Instant;

use tracing::{info, warn};

use super::results::{self, ResultError, ResultRow};
use super::{JobContext, RETRY_PAUSE};
use crate::api::{ApiError, Endpoint, JobStatus};
use crate::decode::match_key;
use crate::model::{has_matches, no_matches, JobSpec, Matches};

/// Downloads of a job's results, at most.
pub(super) const FETCHES: u32 = 6;
/// Status requests for links of a completed job that has none, at most.
const LINKLESS_POLLS: u32 = 5;
/// Fresh links after a download answered 404, at most.
const NOT_FOUND_REFRESHES: u32 = 3;

/// What one pass over a job's result parts gave.
pub(super) struct Fetched {
    /// Every complete line read.
    pub(super) rows: Vec<ResultRow>,
    /// A part was damaged (truncated, corrupt).
    pub(super) damaged: bool,
}

/// Result lines matched back to submitted identifiers: exactly first, then
/// by [`match_key`] (the API may echo an identifier in another form).
struct Matcher {
    rows: Vec<Option<Matches>>,
    exact: HashMap<String, usize>,
    loose: HashMap<String, Vec<usize>>,
}

impl Matcher {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            exact: HashMap::new(),
            loose: HashMap::new(),
        }
    }

    fn add(&mut self, row: ResultRow) {
        let exact = row.matched_on.trim().to_string();
        if self.exact.contains_key(&exact) {
            return;
        }
        let i = self.rows.len();
        self.loose.entry(match_key(row.kind, &exact)).or_default().push(i);
        self.exact.insert(exact, i);
        self.rows.push(Some(row.matches));
    }

    fn take(&mut self, spec: &JobSpec, id: &str) -> Option<Matches> {
        if let Some(m) = self.exact.get(id).and_then(|i| self.rows[*i].take()) {
            return Some(m);
        }
        let candidates = self.loose.get(&match_key(Some(spec.kind), id))?;
        candidates.iter().find_map(|i| self.rows[*i].take())
    }
}

impl JobContext {
    /// Reads the results of completed job `batch_id` (its status, for the
    /// links, unless given), with `api.job_timeout` from now: the time an
    /// accepted job's submit and wait took does not shorten it.
    pub(super) async fn collect_job(
        &self,
        seq: u64,
        spec: &JobSpec,
        batch_id: &str,
        status: Option<JobStatus>,
        ours: bool,
    ) -> Result<(HashMap<String, Matches>, Vec<String>), ApiError> {
        let deadline = Instant::now() + self.cfg.job_timeout;
        let status = match status {
            Some(s) => s,
            None => self.fresh_links(seq, batch_id, deadline).await?,
        };
        self.collect(seq, spec, batch_id, status, deadline, ours).await
    }

    /// Downloads and decodes the results of a completed job and matches
    /// them to the submitted identifiers: (results, missing). Counts the
    /// credits the job spent when `ours`.
    async fn collect(
        &self,
        seq: u64,
        spec: &JobSpec,
        batch_id: &str,
        mut status: JobStatus,
        deadline: Instant,
        ours: bool,
    ) -> Result<(HashMap<String, Matches>, Vec<String>), ApiError> {
        let empty = status.result_count == Some(0);
        let mut results = HashMap::with_capacity(spec.ids.len());
        let mut missing: Vec<String> = spec.ids.clone();
        let mut matcher = Matcher::new();
        let mut fetches = 0;
        while !empty && !missing.is_empty() {
            fetches += 1;
            let fetched = self.fetch(seq, batch_id, &mut status, deadline).await?;
            fetched.rows.into_iter().for_each(|r| matcher.add(r));
            missing.retain(|id| match matcher.take(spec, id) {
                Some(m) => {
                    results.insert(id.clone(), m);
                    false
                }
                None => true,
            });
            if missing.is_empty() {
                break;
            }
            if fetches >= FETCHES {
                warn!(%batch_id, missing = missing.len(), damaged = fetched.damaged, "identifiers still missing from the results after {FETCHES} downloads");
                break;
            }
            status = self.fresh_links(seq, batch_id, deadline).await?;
        }
        if empty {
            for id in missing.drain(..) {
                results.insert(id, no_matches());
            }
        }
        let credits = results.values().filter(|m| has_matches(m)).count() as u64;
        if ours {
            self.metrics.credits_spent(credits);
        }
        info!(%batch_id, submitted = spec.ids.len(), matched = credits, missing = missing.len(), credits_spent = if ours { credits } else { 0 }, fetches, "job results");
        Ok((results, missing))
    }

    /// The job's status again, for fresh links.
    pub(super) async fn fresh_links(&self, seq: u64, batch_id: &str, deadline: Instant) -> Result<JobStatus, ApiError> {
        self.persist(Endpoint::Status, seq, deadline, || self.api.status(batch_id))
            .await
    }

    /// One pass over every part of the results (`download_urls`, else
    /// `download_url`). An expired or missing link renews them all (until
    /// the deadline); a damaged part keeps its complete lines.
    pub(super) async fn fetch(
        &self,
        seq: u64,
        batch_id: &str,
        status: &mut JobStatus,
        deadline: Instant,
    ) -> Result<Fetched, ApiError> {
        let mut linkless = 0;
        let mut not_found = 0;
        'links: loop {
            let urls = if status.download_urls.is_empty() {
                status.download_url.iter().cloned().collect::<Vec<_>>()
            } else {
                status.download_urls.clone()
            };
            if urls.is_empty() {
                linkless += 1;
                if linkless > LINKLESS_POLLS || Instant::now() >= deadline {
                    return Err(ApiError::Malformed(format!(
                        "job {batch_id} completed without download_url"
                    )));
                }
                tokio::time::sleep(RETRY_PAUSE * linkless).await;
                *status = self.fresh_links(seq, batch_id, deadline).await?;
                continue;
            }
            let mut fetched = Fetched {
                rows: Vec::new(),
                damaged: false,
            };
            // api.max_result_bytes bounds all the parts together.
            let mut budget = self.api.max_result_bytes();
            for url in &urls {
                match self
                    .persist(Endpoint::Download, seq, deadline, || self.api.download(url))
                    .await
                {
                    Ok(data) => {
                        let parsed = results::parse_partial(&data, budget);
                        budget = budget.saturating_sub(parsed.bytes);
                        match parsed.error {
                            Some(ResultError::TooLarge(_)) => {
                                return Err(ApiError::TooLarge(self.api.max_result_bytes()))
                            }
                            Some(e) => {
                                self.metrics.result_file_rejected();
                                warn!(error = %e, %batch_id, kept_lines = parsed.rows.len(), "damaged result file");
                                fetched.damaged = true;
                            }
                            None => {}
                        }
                        fetched.rows.extend(parsed.rows);
                    }
                    Err(ApiError::NotFound(_)) if not_found < NOT_FOUND_REFRESHES => {
                        not_found += 1;
                        tokio::time::sleep(RETRY_PAUSE).await;
                        *status = self.fresh_links(seq, batch_id, deadline).await?;
                        continue 'links;
                    }
                    Err(ApiError::LinkExpired(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        *status = self.fresh_links(seq, batch_id, deadline).await?;
                        continue 'links;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(fetched);
        }
    }
}

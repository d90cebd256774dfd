//! What the dispatcher does with a finished job: publish its results (one
//! fan-out path, [`Dispatcher::resolve`], for jobs and adoptions alike) and
//! store them, split a batch the API refused with 400, queue again the
//! identifiers a result file missed, dead-letter what failed for good,
//! adopt what the start-up reconciliation found.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::halt::Verdict;
use super::table::Finished;
use super::{DispatchError, Dispatcher};
use crate::decode::{detect, match_key, normalize};
use crate::jobs::{JobOutcome, ResultRow, Runner};
use crate::model::{has_matches, IdentifierType, JobSpec, Matches};
use crate::sink::{refused_reason, Failure, Publish};
use crate::store::{Cached, ResultStore};

/// Resolved identifiers on their way into the store.
type Resolved = Vec<(IdentifierType, String, Arc<Cached>)>;

impl<P: Publish, R: Runner, S: ResultStore> Dispatcher<P, R, S> {
    /// Acts on a finished job; its slot is free from now on.
    pub(super) async fn finished(&mut self, f: Finished) -> Result<(), DispatchError> {
        let result = match f.outcome {
            Err(e) => {
                if e.is_panic() {
                    error!(error = %e, "job task panicked; requeueing its batch");
                    if let Some(spec) = f.job.and_then(|j| j.spec) {
                        self.batcher.push_ready_front(spec);
                    }
                }
                self.requeue_detached(f.seq);
                Ok(())
            }
            Ok(JobOutcome::Done {
                spec,
                batch_id,
                results,
                missing,
                adopted,
            }) => {
                if !adopted && !f.job.is_some_and(|j| j.rate_limited) {
                    self.jobs.succeeded();
                }
                self.publish(spec, batch_id, results, missing, adopted).await
            }
            Ok(JobOutcome::Rejected { spec, status, message }) => self.rejected(spec, status, &message).await,
            Ok(JobOutcome::NotStarted { spec }) => {
                // Its batch goes first once a slot is confirmed free; until
                // then, no slot is lent early again.
                self.jobs.stop_lending();
                self.batcher.push_ready_front(spec);
                Ok(())
            }
            Ok(JobOutcome::Failed { spec, error }) => {
                warn!(size = spec.ids.len(), %error, "job failed after every attempt; dead-lettering its records");
                let batch_id = error.batch_id().map(str::to_owned);
                self.dead_letter(spec, "job_failed", &error.to_string(), batch_id.as_deref())
                    .await
            }
            Ok(JobOutcome::Recovered { batch_id, rows }) => self.use_recovered(batch_id, rows).await,
            Ok(JobOutcome::RecoveryFailed { batch_id, error }) => {
                info!(%batch_id, %error, "adopted job not usable; its identifiers go through new jobs");
                self.parts.store.job_done(batch_id);
                self.requeue_detached(f.seq);
                Ok(())
            }
            Ok(JobOutcome::Reconciled(adoptions)) => {
                for a in adoptions {
                    let source = if a.spec.is_some() { "journal" } else { "reconciliation" };
                    self.adopt(a.batch_id, a.spec, source);
                }
                Ok(())
            }
        };
        self.parts.metrics.set_active_jobs(self.jobs.active());
        result
    }

    /// Identifiers that waited for job `seq`, which ended without answering
    /// them, go into batches of their own.
    fn requeue_detached(&mut self, seq: u64) {
        for (kind, key) in self.pending.detach(seq) {
            self.batcher.push(kind, key, tokio::time::Instant::now());
        }
    }

    /// Answers every record waiting for `key` with `cached` and adds it to
    /// `resolved`; returns how many records were answered.
    async fn resolve(
        &mut self,
        kind: IdentifierType,
        key: String,
        cached: Arc<Cached>,
        resolved: &mut Resolved,
    ) -> Result<usize, DispatchError> {
        self.pending.resolved(&key);
        self.refusals.forget(&key);
        if !has_matches(&cached.matches) {
            self.free_probe = Some((kind, key.clone()));
        }
        let recs = self.pending.take(&key);
        for rec in &recs {
            self.publish_one(rec, kind, &key, &cached).await?;
        }
        resolved.push((kind, key, cached));
        Ok(recs.len())
    }

    async fn publish(
        &mut self,
        spec: JobSpec,
        batch_id: Arc<str>,
        results: HashMap<String, Matches>,
        missing: Vec<String>,
        adopted: bool,
    ) -> Result<(), DispatchError> {
        let (resolved_at, resolved_at_ms) = now();
        let mut resolved = Vec::with_capacity(results.len());
        let mut answered = 0;
        for (key, matches) in results {
            let cached = Arc::new(Cached {
                matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
                resolved_at_ms,
            });
            answered += self.resolve(spec.kind, key, cached, &mut resolved).await?;
        }
        self.parts.store.put(Some(batch_id.clone()), resolved);
        tracing::debug!(%batch_id, answered, "job results handed to the producer");
        if adopted {
            self.parts.metrics.credits_saved("recovery", answered as u64);
        }
        // Of an adopted job, only the identifiers pending here are ours.
        let missing: Vec<String> = missing.into_iter().filter(|id| self.pending.contains(id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (retry, give_up): (Vec<String>, Vec<String>) = missing
            .into_iter()
            .partition(|id| self.pending.missing_again(id, self.max_job_attempts));
        warn!(%batch_id, retry = retry.len(), give_up = give_up.len(), "identifiers missing from the result file");
        if !retry.is_empty() {
            self.batcher.push_ready_front(JobSpec {
                kind: spec.kind,
                ids: retry,
            });
        }
        if !give_up.is_empty() {
            let msg = format!("absent from the results of job {batch_id} after every attempt");
            let spec = JobSpec {
                kind: spec.kind,
                ids: give_up,
            };
            self.dead_letter(spec, "missing_result", &msg, Some(&batch_id)).await?;
        }
        Ok(())
    }

    /// Answers pending records from the rows of an adopted job whose
    /// identifiers were unknown, and stores every row. A row's identifier
    /// is normalised as the decoder normalises input; one the API echoed in
    /// another form is found by its [`match_key`].
    async fn use_recovered(&mut self, batch_id: Arc<str>, rows: Vec<ResultRow>) -> Result<(), DispatchError> {
        let (resolved_at, resolved_at_ms) = now();
        let mut loose: Option<HashMap<String, String>> = None;
        let mut resolved = Vec::with_capacity(rows.len());
        let mut answered = 0;
        for row in rows {
            let kind = row.kind.unwrap_or_else(|| detect(row.matched_on.trim()));
            let mut key = normalize(kind, row.matched_on.trim()).unwrap_or_else(|_| row.matched_on.trim().to_string());
            if !self.pending.contains(&key) {
                let index = loose.get_or_insert_with(|| {
                    self.pending
                        .keys()
                        .map(|(k, id)| (match_key(Some(k), id), id.to_string()))
                        .collect()
                });
                if let Some(pending) = index.get(&match_key(Some(kind), &key)) {
                    key = pending.clone();
                }
            }
            let cached = Arc::new(Cached {
                matches: row.matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
                resolved_at_ms,
            });
            answered += self.resolve(kind, key, cached, &mut resolved).await?;
        }
        self.parts.store.put(Some(batch_id.clone()), resolved);
        let pending = &self.pending;
        self.batcher.retain(|_, id| pending.contains(id));
        self.parts.metrics.credits_saved("recovery", answered as u64);
        info!(%batch_id, answered, "adopted job's results reused");
        Ok(())
    }

    /// A refused submit (see [`super::halt`]): the offending identifiers are
    /// isolated by halving, a single one refused while the API accepts
    /// other submits is dead-lettered as `api_rejected`, and a refusal of
    /// every request halts submitting (the batch waits).
    async fn rejected(&mut self, spec: JobSpec, status: u16, message: &str) -> Result<(), DispatchError> {
        let was_halted = self.refusals.halted().is_some();
        match self
            .refusals
            .refused(&spec.ids, status, message, tokio::time::Instant::now())
        {
            Verdict::DeadLetter => {
                warn!(identifier_type = spec.kind.as_str(), %message, "API rejected an identifier; dead-lettering it");
                self.dead_letter(spec, "api_rejected", message, None).await
            }
            Verdict::Halt => {
                if !was_halted {
                    error!(status, %message, "the API refuses every submit; submitting halts (nothing is dead-lettered) and is probed slowly until it accepts again");
                    self.parts.metrics.set_halted(true);
                }
                self.parts.health.set_halted(Some(format!("{status}: {message}")));
                self.batcher.push_ready_front(spec);
                Ok(())
            }
            Verdict::Split => {
                self.split(spec);
                Ok(())
            }
        }
    }

    /// Halves a batch; both halves go ahead of every other batch.
    fn split(&mut self, spec: JobSpec) {
        let mut left = spec.ids;
        let right = left.split_off(left.len() / 2);
        self.batcher.push_ready_front(JobSpec {
            kind: spec.kind,
            ids: right,
        });
        self.batcher.push_ready_front(JobSpec {
            kind: spec.kind,
            ids: left,
        });
    }

    /// Dead-letters every live record waiting for the identifiers of `spec`.
    async fn dead_letter(
        &mut self,
        spec: JobSpec,
        reason: &'static str,
        message: &str,
        batch_id: Option<&str>,
    ) -> Result<(), DispatchError> {
        for key in spec.ids {
            self.pending.resolved(&key);
            self.refusals.forget(&key);
            for rec in self.pending.take(&key) {
                if self.is_live(&rec) {
                    let f = Failure {
                        reason,
                        message,
                        identifier: Some(&key),
                        batch_id,
                    };
                    self.parts.sink.dead_letter(&rec, f).await?;
                }
            }
        }
        Ok(())
    }

    /// Dead-letters the outputs the broker refused for themselves.
    pub(super) async fn refused(&mut self) -> Result<(), DispatchError> {
        for r in self.parts.fatal.take_refused() {
            if !self.is_live(&r.rec) {
                continue;
            }
            let message = format!("the broker refused the output: {}", r.error);
            let f = Failure {
                reason: refused_reason(&r.error),
                message: &message,
                identifier: Some(&r.identifier),
                batch_id: Some(&r.batch_id),
            };
            warn!(
                identifier_type = "output",
                reason = f.reason,
                "output refused by the broker; dead-lettered"
            );
            self.parts.sink.dead_letter(&r.rec, f).await?;
        }
        Ok(())
    }
}

/// Now, as RFC 3339 and in ms since the epoch.
fn now() -> (Arc<str>, i64) {
    let t = chrono::Utc::now();
    (
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
        t.timestamp_millis(),
    )
}

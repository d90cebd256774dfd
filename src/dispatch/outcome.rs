//! What the dispatcher does with a finished job: publish its results (one
//! fan-out path, [`Dispatcher::resolve`], for jobs and recoveries alike),
//! split a batch the API refused with 400, queue again the identifiers a
//! result file missed, dead-letter what failed for good.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::table::Finished;
use super::{DispatchError, Dispatcher};
use crate::cache::Cached;
use crate::decode::detect;
use crate::jobs::{JobOutcome, ResultRow, Runner};
use crate::model::{IdentifierType, JobSpec, Matches};
use crate::sink::Publish;

impl<P: Publish, R: Runner> Dispatcher<P, R> {
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
                Ok(())
            }
            Ok(JobOutcome::Done {
                spec,
                batch_id,
                results,
                missing,
            }) => {
                if !f.job.is_some_and(|j| j.rate_limited) {
                    self.jobs.succeeded();
                }
                self.publish(spec, batch_id, results, missing).await
            }
            Ok(JobOutcome::Rejected { spec, message }) => self.rejected(spec, &message).await,
            Ok(JobOutcome::Failed { spec, error }) => {
                warn!(size = spec.ids.len(), %error, "job failed after every attempt; dead-lettering its records");
                self.dead_letter(spec, "job_failed", &error.to_string()).await
            }
            Ok(JobOutcome::Recovered { batch_id, rows }) => self.use_recovered(batch_id, rows).await,
            Ok(JobOutcome::RecoveryFailed { batch_id, error }) => {
                info!(%batch_id, %error, "recovered job not usable; its identifiers go through new jobs");
                Ok(())
            }
        };
        self.parts.metrics.set_active_jobs(self.jobs.len());
        result
    }

    /// Answers every record waiting for `key` with `cached` and caches it;
    /// returns how many records were answered.
    async fn resolve(
        &mut self,
        kind: IdentifierType,
        key: String,
        cached: Arc<Cached>,
    ) -> Result<usize, DispatchError> {
        self.pending.resolved(&key);
        let recs = self.pending.take(&key);
        for rec in &recs {
            self.publish_one(rec, kind, &key, &cached).await?;
        }
        self.cache.insert(key, cached);
        Ok(recs.len())
    }

    async fn publish(
        &mut self,
        spec: JobSpec,
        batch_id: Arc<str>,
        results: HashMap<String, Matches>,
        missing: Vec<String>,
    ) -> Result<(), DispatchError> {
        let resolved_at = now_rfc3339();
        for (key, matches) in results {
            let cached = Arc::new(Cached {
                matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
            });
            self.resolve(spec.kind, key, cached).await?;
        }
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
            self.dead_letter(spec, "missing_result", &msg).await?;
        }
        Ok(())
    }

    /// Answers pending records from a recovered job's rows and caches them.
    async fn use_recovered(&mut self, batch_id: Arc<str>, rows: Vec<ResultRow>) -> Result<(), DispatchError> {
        let resolved_at = now_rfc3339();
        let mut answered = 0u64;
        for row in rows {
            let cached = Arc::new(Cached {
                matches: row.matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
            });
            let kind = detect(&row.matched_on);
            answered += self.resolve(kind, row.matched_on, cached).await? as u64;
        }
        let pending = &self.pending;
        self.batcher.retain(|_, id| pending.contains(id));
        self.parts.metrics.credits_saved("recovery", answered);
        info!(%batch_id, answered, "recovered job's results reused");
        Ok(())
    }

    /// A 400: the offending identifiers are isolated by halving; a single
    /// identifier refused is dead-lettered as `api_rejected`.
    async fn rejected(&mut self, spec: JobSpec, message: &str) -> Result<(), DispatchError> {
        if spec.ids.len() == 1 {
            warn!(identifier_type = spec.kind.as_str(), %message, "API rejected an identifier; dead-lettering it");
            return self.dead_letter(spec, "api_rejected", message).await;
        }
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
        Ok(())
    }

    /// Dead-letters every live record waiting for the identifiers of `spec`.
    async fn dead_letter(&mut self, spec: JobSpec, reason: &'static str, message: &str) -> Result<(), DispatchError> {
        for key in spec.ids {
            self.pending.resolved(&key);
            for rec in self.pending.take(&key) {
                if self.is_live(&rec) {
                    self.parts.sink.dead_letter(&rec, reason, message).await?;
                }
            }
        }
        Ok(())
    }
}

fn now_rfc3339() -> Arc<str> {
    chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .into()
}

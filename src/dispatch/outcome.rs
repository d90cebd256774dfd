//! What the dispatcher does with a finished job: publish its results (one
//! fan-out path, [`Dispatcher::resolve`], for its own jobs and followed
//! ones alike) and store them, split a batch the API refused with 400,
//! queue again the identifiers a result file missed, dead-letter what
//! failed for good, close the job in the journal, resume a job whose task
//! panicked.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinError;
use tracing::{error, warn, Instrument, Span};

use super::halt::Verdict;
use super::table::{Finished, Job};
use super::{DispatchError, Dispatcher};
use crate::jobs::{JobOutcome, Runner};
use crate::lifecycle::{JobId, Outcome};
use crate::model::{has_matches, IdentifierType, JobSpec, Matches};
use crate::sink::{refused_reason, Failure, Publish};
use crate::store::{Cached, ResultStore};
use crate::telemetry;

/// Resolved identifiers on their way into the store.
type Resolved = Vec<(IdentifierType, String, Arc<Cached>)>;

/// How a job's task ended, for its span.
fn outcome_label(outcome: &Result<JobOutcome, JoinError>) -> &'static str {
    match outcome {
        Err(e) if e.is_panic() => "panicked",
        Err(_) => "aborted",
        Ok(JobOutcome::Done { .. }) => "completed",
        Ok(JobOutcome::Rejected { .. }) => "rejected",
        Ok(JobOutcome::Failed { .. }) => "failed",
        Ok(JobOutcome::Released) => "released",
    }
}

impl<P: Publish, R: Runner, S: ResultStore> Dispatcher<P, R, S> {
    /// Acts on a finished job; its slot is free from now on.
    pub(super) async fn finished(&mut self, f: Finished) -> Result<(), DispatchError> {
        let id = f.job.as_ref().map(|j| j.id.clone());
        let span = f.job.as_ref().map_or_else(Span::none, |j| j.span.clone());
        telemetry::attr(&span, "outcome", outcome_label(&f.outcome));
        let result = match f.outcome {
            Err(e) => {
                if e.is_panic() {
                    self.panicked(f.seq, f.job).await?;
                } else {
                    // Aborted (shutdown): its journal record stays, and its
                    // records stay uncommitted.
                    self.requeue_detached(f.seq).await?;
                }
                Ok(())
            }
            Ok(JobOutcome::Done {
                spec,
                batch_id,
                results,
                missing,
                followed,
            }) => {
                let own = if followed { None } else { id };
                let publishing = telemetry::publish(&span);
                self.publish(spec, own, batch_id, results, missing, &span)
                    .instrument(publishing)
                    .await
            }
            Ok(JobOutcome::Rejected { spec, status, message }) => {
                if let Some(id) = id {
                    self.parts.store.close(id, Outcome::Rejected);
                }
                self.rejected(spec, status, &message).await
            }
            Ok(JobOutcome::Failed { spec, error }) => {
                if let Some(id) = id {
                    self.parts.store.close(id, Outcome::Failed);
                }
                warn!(size = spec.ids.len(), %error, "job failed after every attempt; dead-lettering its records");
                let batch_id = error.batch_id().map(str::to_owned);
                self.dead_letter(spec, "job_failed", &error.to_string(), batch_id.as_deref())
                    .await
            }
            Ok(JobOutcome::Released) => self.requeue_detached(f.seq).await,
        };
        self.parts.metrics.set_active_jobs(self.jobs.active());
        result
    }

    /// A job task panicked. If its journal record is in flight, the job
    /// may exist at the API: a new task resumes it from the journal (never
    /// submitting what may have been accepted). A job that never got a
    /// record sent nothing: its identifiers go through new jobs.
    async fn panicked(&mut self, seq: u64, job: Option<Job>) -> Result<(), DispatchError> {
        let Some(job) = job else {
            return self.requeue_detached(seq).await;
        };
        let tries = self.panics.entry(job.id.clone()).or_insert(0);
        *tries += 1;
        let rec = self.parts.store.record(&job.id).filter(|r| r.in_flight());
        match rec {
            Some(rec) if *tries < self.max_job_attempts => {
                error!(job = %job.id, "job task panicked; resuming the job from its journal record");
                let next = self.adopt(job.id, rec);
                self.pending.move_job(seq, next);
                Ok(())
            }
            Some(_) => {
                error!(job = %job.id, "job task panicked again; dead-lettering its records");
                self.parts.store.close(job.id, Outcome::Failed);
                self.dead_letter(job.spec, "job_failed", "the job's task failed repeatedly", None)
                    .await
            }
            None => {
                error!(job = %job.id, "job task panicked before its submit was written; its identifiers go through new jobs");
                self.requeue_detached(seq).await
            }
        }
    }

    /// Identifiers that waited for job `seq`, which ended without answering
    /// them, are routed again (the store may have them by now).
    async fn requeue_detached(&mut self, seq: u64) -> Result<(), DispatchError> {
        for (kind, key) in self.pending.detach(seq) {
            self.route(kind, key).await?;
        }
        Ok(())
    }

    /// Answers every record waiting for `key` with `cached` and adds it to
    /// `resolved`; returns how many records were answered.
    async fn resolve(
        &mut self,
        kind: IdentifierType,
        key: String,
        cached: Arc<Cached>,
        resolved: &mut Resolved,
        job: &Span,
    ) -> Result<usize, DispatchError> {
        self.pending.resolved(&key);
        self.refusals.forget(&key);
        if !has_matches(&cached.matches) {
            self.free_probe = Some((kind, key.clone()));
        }
        let recs = self.pending.take(&key);
        let n = recs.len();
        for rec in recs {
            self.publish_one(rec, kind, &key, &cached, Some(job)).await?;
        }
        resolved.push((kind, key, cached));
        Ok(n)
    }

    /// Publishes what job `own` (this pod's; `None`: another pod's, whose
    /// owner stores the results) resolved, and stores it.
    async fn publish(
        &mut self,
        spec: JobSpec,
        own: Option<JobId>,
        batch_id: Arc<str>,
        results: HashMap<String, Matches>,
        missing: Vec<String>,
        job: &Span,
    ) -> Result<(), DispatchError> {
        let followed = own.is_none();
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
            answered += self.resolve(spec.kind, key, cached, &mut resolved, job).await?;
            failpoint!("publish.halfway", answered * 2 >= spec.ids.len());
        }
        self.parts.store.put(own, resolved);
        failpoint!("publish.after_store_handoff");
        tracing::debug!(%batch_id, answered, "job results handed to the producer");
        if followed {
            self.parts.metrics.credits_saved("recovery", answered as u64);
        }
        // Of a followed job, only the identifiers pending here are ours.
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
                    self.dead_lettered(&rec).await?;
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

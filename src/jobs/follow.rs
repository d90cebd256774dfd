//! Jobs of the journal that this pod did not start: its own from before a
//! restart (the same member id), which it resumes; and another pod's,
//! which cover identifiers this pod now waits for (after a rebalance, or
//! the same identifier on two pods). Those are followed through the
//! journal, never through the API: once the owner records the job
//! completed, this pod reads its results (downloads are free); if the job
//! ends without results, its identifiers go through this pod's own jobs.
//! An owner silent for [`CLAIM_AFTER`] (a crash, a pod cut off from Kafka)
//! is replaced: this pod writes a claim, and if its claim is the first in
//! the log it owns the job and resumes it. Two pods cannot both resume a
//! job, and the old owner's late writes change nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::{JobContext, JobOutcome};
use crate::lifecycle::{JobId, Outcome, Phase, Record, Stage};
use crate::share::CLAIM_AFTER;

/// How often a follower looks at its owner's silence.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl JobContext {
    /// Drives journaled job `job` on from `rec` (see the module header).
    pub(super) async fn adopt_job(&self, seq: u64, job: JobId, rec: Record) -> JobOutcome {
        let Some(spec) = rec.spec() else {
            return JobOutcome::Released;
        };
        let me = self.store.me().to_string();
        if rec.owner == me && rec.in_flight() {
            return self.resume(seq, &job, spec, rec).await;
        }
        self.phase(seq, Phase::Following);
        let team = self.store.team();
        let mut changes = self.store.journal_changes();
        loop {
            let Some(now) = self.store.record(&job) else {
                debug!(%job, "a followed job is gone without results for this pod");
                return JobOutcome::Released;
            };
            match &now.stage {
                Stage::Completed { batch_id, .. }
                | Stage::Closed {
                    outcome: Outcome::Published,
                    batch_id: Some(batch_id),
                    ..
                } => return self.read_followed(seq, spec, Arc::from(batch_id.as_str())).await,
                Stage::Closed { .. } => return JobOutcome::Released,
                _ => {}
            }
            if now.owner == me {
                return self.resume(seq, &job, spec, now).await;
            }
            if team.silent_for(&now.owner, Instant::now()) >= CLAIM_AFTER {
                let claim = now.claimed_by(&me);
                let written = self.store.journal_claim(&job, &claim).await;
                match self.store.confirmed(&job, written).await {
                    Some(r) if r.owner == me => {
                        info!(%job, from = %now.owner, stage = ?r.stage, "claimed a job whose owner fell silent");
                        self.metrics.job_adopted("claim");
                        return self.resume(seq, &job, spec, r).await;
                    }
                    _ => debug!(%job, "another pod claimed the job first"),
                }
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// Reads the results of another pod's job, completed as `batch_id`.
    async fn read_followed(&self, seq: u64, spec: crate::model::JobSpec, batch_id: Arc<str>) -> JobOutcome {
        self.phase(seq, Phase::Collecting);
        match self.collect_job(seq, &spec, &batch_id, None, false).await {
            Ok((results, missing)) => JobOutcome::Done {
                spec,
                batch_id,
                results,
                missing,
                followed: true,
            },
            // Unreadable here; its owner read it, and its results reach the
            // store: this pod's identifiers go through the usual path again.
            Err(e) => {
                debug!(%batch_id, error = %e, "cannot read a followed job's results");
                JobOutcome::Released
            }
        }
    }
}

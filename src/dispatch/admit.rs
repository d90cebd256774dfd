//! Admission: which batches become jobs now. While a slot is free, the
//! next ready batch goes, cut to the credit budget's room (the rest waits
//! at the front); with no room, submitting halts on the budget. While the
//! API refuses every submit, one probe goes when it is due (within the
//! budget too).

use tokio::time::Instant;
use tracing::info;

use super::Dispatcher;
use crate::budget::{reservation_id, Take};
use crate::jobs::Runner;
use crate::lifecycle::{new_job_id, JobId};
use crate::model::JobSpec;
use crate::sink::Publish;
use crate::store::ResultStore;

impl<P: Publish, R: Runner, S: ResultStore> Dispatcher<P, R, S> {
    /// Starts jobs while a slot is free and a batch is ready; while halted,
    /// one probe when it is due. Every job is cut to the budget's room.
    pub(super) fn dispatch(&mut self) {
        let now = Instant::now();
        let budget = self.parts.budget.clone();
        if budget.halted().is_some() && budget.may_resume(crate::model::now_ms()) {
            budget.resume();
        }
        if self.refusals.halted().is_some() {
            if budget.halted().is_none() && self.has_room() && self.refusals.probe_due(now) {
                if let Some((id, spec)) = self.probe_batch(now).and_then(|s| self.within_budget(s)) {
                    info!(size = spec.ids.len(), "probing whether the API accepts submits again");
                    self.start_job(id, spec);
                }
            }
            return;
        }
        while self.may_submit() {
            let Some(spec) = self.next_batch(now) else {
                break;
            };
            let Some((id, spec)) = self.within_budget(spec) else {
                break;
            };
            self.start_job(id, spec);
        }
        // Work waits for a slot, and the budget has no room for it either:
        // say so (readiness), rather than only wait for the slot.
        if budget.halted().is_none() && self.batcher.has_ready() {
            if let Some(room) = budget.room(crate::model::now_ms()).filter(|r| r.credits == 0) {
                budget.halt(room);
            }
        }
    }

    /// `spec` cut to the budget's room, with the new job's id (what does
    /// not fit waits at the front); `None` without room: submitting halts
    /// and `spec` waits (unless it is the free probe, pending nowhere).
    fn within_budget(&mut self, mut spec: JobSpec) -> Option<(JobId, JobSpec)> {
        let budget = self.parts.budget.clone();
        let id = new_job_id();
        match budget.take(&reservation_id(&id, 1), spec.ids.len(), crate::model::now_ms()) {
            Take::All => {}
            Take::Part(k) => {
                let rest = JobSpec {
                    kind: spec.kind,
                    ids: spec.ids.split_off(k),
                };
                self.batcher.push_ready_front(rest);
            }
            Take::Nothing(room) => {
                if spec.ids.first().is_some_and(|x| self.pending.contains(x)) {
                    self.batcher.push_ready_front(spec);
                }
                budget.halt(room);
                return None;
            }
        }
        Some((id, spec))
    }

    /// The next batch to submit, without identifiers of revoked partitions.
    fn next_batch(&mut self, now: Instant) -> Option<JobSpec> {
        loop {
            let spec = self.batcher.next_job(now)?;
            let t = self.parts.tracker.lock().expect("tracker");
            if let Some(spec) = self.pending.prune_stale(spec, &t) {
                return Some(spec);
            }
        }
    }

    /// What a probe of a halted API submits: the next batch, unless it is a
    /// single identifier already refused (that would tell nothing about the
    /// API); then an identifier known to resolve to nobody, if one is.
    fn probe_batch(&mut self, now: Instant) -> Option<JobSpec> {
        let spec = self.next_batch(now);
        match (spec, &self.free_probe) {
            (Some(s), Some((kind, id))) if s.ids.len() == 1 && self.refusals.suspect(&s.ids[0]) => {
                self.batcher.push_ready_front(s);
                Some(JobSpec {
                    kind: *kind,
                    ids: vec![id.clone()],
                })
            }
            (spec, _) => spec,
        }
    }
}

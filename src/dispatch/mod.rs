//! Dispatch: the single owner of every pending identifier. It answers from
//! the result store, attaches repeats to the identifier already pending (in
//! an open batch or a running job) and identifiers a journaled job covers
//! to that job (following it, when another pod runs it), hands batches to
//! jobs while a job slot is free ([`table`]), and fans each job's results
//! out to every record that carried the identifier and into the store
//! ([`outcome`]). Jobs of the journal that nobody drives (this pod's from
//! before a restart, those of a pod that fell silent) are picked up at
//! start-up and every [`ORPHANS_EVERY`]: the journal is the one recovery
//! path.
//!
//! It talks to the API only through a [`Runner`], to Kafka only through a
//! [`Publish`]er and a [`ResultStore`], so its decisions are unit-tested
//! without either ([`tests`]).

mod admit;
mod halt;
mod order;
mod outcome;
mod pending;
mod publish;
mod slots;
mod table;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use crate::batch::Batcher;
use crate::budget::Budget;
use crate::config::Config;
use crate::health::Health;
use crate::jobs::{JobEvent, Runner};
use crate::lifecycle::{JobId, Phase, Record};
use crate::metrics::Metrics;
use crate::model::{IdentifierType, InputRecord, JobSpec};
use crate::offsets::OffsetTracker;
use crate::share::Team;
use crate::sink::{Fatal, Publish, SinkError};
use crate::source::{SourceEvent, Work};
use crate::store::ResultStore;
use crate::telemetry;
use halt::Refusals;
use order::KeyOrder;
use pending::Pending;
use publish::Held;
use table::JobTable;

/// Why the dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A record could not be handed to the producer.
    #[error(transparent)]
    Publish(#[from] SinkError),
    /// The producer reported a delivery failure.
    #[error("{0}")]
    Fatal(SinkError),
}

/// How the dispatcher stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Shutdown requested; in-flight jobs finished or timed out.
    Shutdown,
    /// The source ended.
    SourceClosed,
}

/// What the dispatcher needs from the rest of the pipeline.
pub(crate) struct Parts<P, R, S> {
    /// Runs jobs.
    pub(crate) runner: R,
    /// Takes results and dead letters.
    pub(crate) sink: Arc<P>,
    /// What was resolved, and the job journal.
    pub(crate) store: Arc<S>,
    /// The shared offset tracker.
    pub(crate) tracker: Arc<Mutex<OffsetTracker>>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Readiness flags (whether the API refuses the key).
    pub(crate) health: Arc<Health>,
    /// Set by the producer on a delivery failure.
    pub(crate) fatal: Arc<Fatal>,
    /// The pods sharing the key (this pod's share of its slots).
    pub(crate) team: Arc<Team>,
    /// The credit budget.
    pub(crate) budget: Arc<Budget>,
}

/// How often the journal is looked at for jobs nobody drives.
pub(crate) const ORPHANS_EVERY: Duration = Duration::from_secs(5);

/// Dispatcher state.
pub(crate) struct Dispatcher<P, R, S> {
    batcher: Batcher,
    pending: Pending,
    jobs: JobTable,
    refusals: Refusals,
    /// An identifier known to resolve to nobody (free to submit): what a
    /// probe of a halted API submits when nothing better is queued.
    free_probe: Option<(IdentifierType, String)>,
    max_job_attempts: u32,
    /// The key's active-job slots (`api.max_active_jobs`), shared with the
    /// other pods of the team.
    key_slots: usize,
    /// Job tasks that panicked, by journal id.
    panics: std::collections::HashMap<JobId, u32>,
    /// `output.ordering = "key"` (at least once; exactly-once produces
    /// each partition's outputs in input order already).
    order: Option<KeyOrder<Held>>,
    parts: Parts<P, R, S>,
}

impl<P: Publish, R: Runner, S: ResultStore> Dispatcher<P, R, S> {
    /// A dispatcher for `cfg`.
    pub(crate) fn new(cfg: &Config, parts: Parts<P, R, S>) -> Self {
        Self {
            batcher: Batcher::new(cfg.batch.max_size, cfg.batch.linger),
            pending: Pending::default(),
            jobs: JobTable::new(cfg.api.max_active_jobs),
            refusals: Refusals::default(),
            free_probe: None,
            max_job_attempts: cfg.api.max_job_attempts,
            key_slots: cfg.api.max_active_jobs,
            panics: std::collections::HashMap::new(),
            order: (cfg.output.ordering == crate::config::Ordering::Key && !cfg.kafka.exactly_once)
                .then(KeyOrder::default),
            parts,
        }
    }

    /// Runs until `stop` fires (then lets running jobs finish within
    /// `grace`) or the source closes.
    pub(crate) async fn run(
        mut self,
        mut rx: UnboundedReceiver<SourceEvent>,
        mut events: UnboundedReceiver<JobEvent>,
        stop: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<Stopped, DispatchError> {
        tokio::pin!(stop);
        let fatal = self.parts.fatal.clone();
        self.adopt_orphans();
        let mut orphans = tokio::time::interval_at(Instant::now() + ORPHANS_EVERY, ORPHANS_EVERY);
        let team = self.parts.team.clone();
        let budget = self.parts.budget.clone();
        let stopped = loop {
            let now = std::time::Instant::now();
            self.jobs.judge(Instant::now(), |ms| team.peers_active_at(ms, now));
            self.tell_team();
            self.dispatch();
            let work = self.tell_team();
            // Wake for a linger deadline only when a job could start then,
            // for a probe only while halted, for the team while only its
            // share or the learnt limit holds a batch back: no loop ever
            // spins.
            let deadline = self.batcher.next_deadline().filter(|_| self.may_submit());
            let probe = self.refusals.halted().map(|h| h.next_probe);
            let share_bound = work && !self.has_room();
            let expiry = team
                .next_change(std::time::Instant::now())
                .map(Instant::from_std)
                .into_iter()
                .chain(self.jobs.capacity_change(Instant::now()))
                .min()
                .filter(|_| share_bound);
            // While the budget halts submitting: wake when room may have
            // come back (a settlement, a removal) or the window rolls.
            let budget_halt = budget.halted().map(|r| {
                let left = (r.reopens_ms - crate::model::now_ms()).max(0) as u64;
                Instant::now() + Duration::from_millis(left)
            });
            tokio::select! {
                biased;
                _ = &mut stop => break Stopped::Shutdown,
                _ = fatal.notify.notified() => {
                    if fatal.get().is_some() {
                        return Err(self.fatal_error());
                    }
                    self.refused().await?;
                }
                Some(ev) = events.recv() => self.event(ev),
                finished = self.jobs.join_next() => self.finished(finished).await?,
                input = rx.recv() => match input {
                    Some(SourceEvent::Records(batch)) => {
                        for w in batch {
                            self.accept(w).await?;
                        }
                    }
                    Some(SourceEvent::Revoked) => self.drop_revoked(),
                    Some(SourceEvent::Assigned) => tokio::select! {
                        () = self.parts.store.caught_up() => {}
                        _ = &mut stop => break Stopped::Shutdown,
                    },
                    None => break Stopped::SourceClosed,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
                _ = tokio::time::sleep_until(probe.unwrap_or_else(Instant::now)), if probe.is_some() => {}
                _ = orphans.tick() => self.adopt_orphans(),
                _ = team.peers_changed.notified(), if share_bound => {}
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {}
                _ = budget.changed.notified(), if budget_halt.is_some() => {}
                _ = tokio::time::sleep_until(budget_halt.unwrap_or_else(Instant::now)), if budget_halt.is_some() => {}
            }
        };
        self.drain(&mut events, grace).await?;
        Ok(stopped)
    }

    /// Shutdown: no new jobs; running ones get `grace` to publish, then are
    /// aborted (their records stay uncommitted).
    async fn drain(&mut self, events: &mut UnboundedReceiver<JobEvent>, grace: Duration) -> Result<(), DispatchError> {
        info!(
            running = self.jobs.len(),
            "dispatcher stopping; waiting for running jobs"
        );
        let until = Instant::now() + grace;
        while !self.jobs.is_empty() {
            tokio::select! {
                Some(ev) = events.recv() => self.event(ev),
                finished = self.jobs.join_next() => self.finished(finished).await?,
                _ = tokio::time::sleep_until(until) => {
                    warn!(running = self.jobs.len(), "shutdown.timeout reached; abandoning running jobs (their records stay uncommitted)");
                    self.jobs.abort_all();
                    break;
                }
            }
        }
        Ok(())
    }

    fn fatal_error(&self) -> DispatchError {
        DispatchError::Fatal(self.parts.fatal.get().expect("a fatal error was set"))
    }

    /// Whether a new job may start now: a slot is free, submitting is not
    /// halted (by the API's refusals or the budget), and the key is not
    /// refused (while it is, only the job already retrying probes it).
    fn may_submit(&self) -> bool {
        self.has_room()
            && self.refusals.halted().is_none()
            && self.parts.budget.halted().is_none()
            && (!self.parts.health.api_refused() || self.jobs.is_empty())
    }

    /// Tells the team what this pod has: work waiting, slots held,
    /// partitions. Returns whether work waits.
    fn tell_team(&self) -> bool {
        let team = &self.parts.team;
        let work = self.batcher.has_ready();
        team.set_demand(work);
        // In fours: the remainder slot moves to a pod that fell behind by
        // a few batches, not back and forth with every batch.
        team.set_backlog(self.batcher.batches() / 4);
        team.set_active(self.jobs.active());
        team.set_partitions(self.parts.tracker.lock().expect("tracker").assigned() as u32);
        work
    }

    /// Whether this pod's share of the key's slots has room for a job.
    fn has_room(&self) -> bool {
        self.parts.team.set_active(self.jobs.active());
        let slots = self.key_slots.min(self.jobs.capacity(Instant::now()));
        self.parts.team.room(slots, std::time::Instant::now()).free > 0
    }

    fn start_job(&mut self, id: JobId, spec: JobSpec) {
        self.parts.metrics.batch_submitted(spec.kind.as_str(), spec.ids.len());
        let seq = self.jobs.next_seq();
        self.pending.assign(&spec, seq);
        let span = telemetry::job(&id, spec.ids.len(), false);
        let task = self.parts.runner.run(seq, id.clone(), spec.clone());
        self.jobs
            .start(seq, id, spec, Phase::Planned, task.instrument(span.clone()), span);
        self.parts.metrics.set_active_jobs(self.jobs.active());
    }

    /// Journaled jobs nobody drives: this pod's own from before a restart,
    /// and those whose owner has been silent long enough to be claimed.
    fn adopt_orphans(&mut self) {
        for (id, rec) in self.parts.store.orphans() {
            if self.jobs.seq_of(&id).is_none() {
                self.adopt(id, rec);
            }
        }
    }

    /// Starts driving or following journaled job `id`, unless it runs
    /// here already; returns its job number.
    fn adopt(&mut self, id: JobId, rec: Record) -> u64 {
        if let Some(seq) = self.jobs.seq_of(&id) {
            return seq;
        }
        let spec = rec.spec().unwrap_or(JobSpec {
            kind: IdentifierType::BusinessEmail,
            ids: Vec::new(),
        });
        info!(job = %id, owner = %rec.owner, stage = ?rec.stage, identifiers = spec.ids.len(), "taking up a journaled job");
        // This pod's own job holds its slot from now (it may run at the
        // API); another pod's is followed until claimed.
        let phase = if rec.owner == self.parts.team.me() && rec.in_flight() {
            Phase::of(&rec.stage)
        } else {
            Phase::Following
        };
        let seq = self.jobs.next_seq();
        let span = telemetry::job(&id, spec.ids.len(), true);
        let task = self.parts.runner.adopt(seq, id.clone(), rec);
        self.jobs
            .start(seq, id, spec, phase, task.instrument(span.clone()), span);
        self.parts.metrics.set_active_jobs(self.jobs.active());
        seq
    }

    fn event(&mut self, ev: JobEvent) {
        match ev {
            JobEvent::Phase { seq, phase } => {
                if self.jobs.set_phase(seq, phase) {
                    self.parts.metrics.set_active_jobs(self.jobs.active());
                }
            }
            JobEvent::Accepted {
                seq,
                remaining,
                sent_ms,
            } => {
                let peers = self.parts.team.peers_active(std::time::Instant::now());
                self.jobs.accepted(seq, remaining, peers, sent_ms);
                if self.refusals.accepted(Instant::now()) {
                    info!("the API accepts submits again; resuming");
                    self.parts.health.set_halted(None);
                    self.parts.metrics.set_halted(false);
                }
            }
            JobEvent::RateLimited { seq } => {
                let peers = self.parts.team.peers_active(std::time::Instant::now());
                let now_ms = chrono::Utc::now().timestamp_millis();
                let (before, after) = self.jobs.rate_limited(seq, peers, now_ms);
                if after < before {
                    warn!(
                        limit = after,
                        "429 on submit: the key's slots are shared with jobs this pod does not see; leaving them their slots for a while"
                    );
                }
            }
        }
    }

    /// Takes one decoded record: a repeat of a pending identifier waits
    /// with it, a stored one is answered at once, one a journaled job
    /// covers waits for that job, a new one is batched.
    async fn accept(&mut self, w: Work) -> Result<(), DispatchError> {
        let (kind, key, rec) = (w.id.kind, w.id.value, w.rec);
        if self.order.is_some() {
            // A record of a partition revoked meanwhile (its Revoked event
            // can come before the batch that holds it) never leaves a queue.
            if !self.is_live(&rec) {
                return Ok(());
            }
            if let Some(order) = &mut self.order {
                order.enter(&rec.pos, rec.key.as_ref());
            }
        }
        if self.pending.contains(&key) {
            self.pending.push(&key, rec);
            self.parts.metrics.credits_saved("dedupe", 1);
            return Ok(());
        }
        if let Some((hit, found)) = self.parts.store.get(kind, &key) {
            self.parts.metrics.credits_saved(found.label(), 1);
            return self.publish_one(rec, kind, &key, &hit, None).await;
        }
        self.pending.insert(kind, key.clone(), rec, None);
        self.place(kind, key);
        Ok(())
    }

    /// Pending identifier `key` (with no job): a journaled job covering it
    /// (it waits for that job), else a batch.
    fn place(&mut self, kind: IdentifierType, key: String) {
        if let Some((id, rec)) = self.parts.store.covering(&key) {
            let seq = self.adopt(id, rec);
            self.pending.set_job(&key, seq);
            return;
        }
        self.batcher.push(kind, key, Instant::now());
    }

    /// Pending identifier `key`, whose job ended without answering it:
    /// the store may have it by now (published at once), else
    /// [`Self::place`].
    async fn route(&mut self, kind: IdentifierType, key: String) -> Result<(), DispatchError> {
        if let Some((hit, found)) = self.parts.store.get(kind, &key) {
            let recs = self.pending.take(&key);
            self.parts.metrics.credits_saved(found.label(), recs.len() as u64);
            for rec in recs {
                self.publish_one(rec, kind, &key, &hit, None).await?;
            }
            return Ok(());
        }
        self.place(kind, key);
        Ok(())
    }

    /// Partitions were revoked: their records leave the pending identifiers
    /// and the batches.
    fn drop_revoked(&mut self) {
        let dropped = {
            let t = self.parts.tracker.lock().expect("tracker");
            self.pending.drop_revoked(&t)
        };
        if let Some(order) = &mut self.order {
            let t = self.parts.tracker.lock().expect("tracker");
            order.retain(|tp, epoch| t.is_current(tp, epoch));
            self.parts.metrics.set_held_outputs(order.held());
        }
        if dropped > 0 {
            let pending = &self.pending;
            self.batcher.retain(|_, id| pending.contains(id));
            info!(identifiers = dropped, "identifiers of revoked partitions dropped");
        }
    }

    fn is_live(&self, rec: &InputRecord) -> bool {
        self.parts.tracker.lock().expect("tracker").is_live(&rec.pos)
    }
}

//! The jobs this pod runs or follows, one value per job ([`Job`]: its
//! journal id, what it covers, its [`Phase`]); the slots they hold follow
//! from their phases, and the learnt slot limit ([`SlotLimit`]) bounds
//! them. The task of each job is in a `JoinSet`; nothing else is kept
//! beside the jobs.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::warn;

use super::slots::{SlotLimit, TeamView};
use crate::jobs::JobOutcome;
use crate::lifecycle::{JobId, Phase};
use crate::model::JobSpec;

/// One job of this pod (its own, or one it follows).
#[derive(Debug)]
pub(super) struct Job {
    /// Its journal id.
    pub(super) id: JobId,
    /// What it covers.
    pub(super) spec: JobSpec,
    /// Where it is.
    pub(super) phase: Phase,
    /// Its trace span (disabled when telemetry is off).
    pub(super) span: tracing::Span,
}

/// A job task that ended.
pub(super) struct Finished {
    /// Its job number.
    pub(super) seq: u64,
    /// The job, if it was known.
    pub(super) job: Option<Job>,
    /// Its outcome, or why the task did not return one.
    pub(super) outcome: Result<JobOutcome, JoinError>,
}

/// The jobs.
pub(super) struct JobTable {
    set: JoinSet<JobOutcome>,
    tasks: HashMap<Id, u64>,
    jobs: HashMap<u64, Job>,
    next_seq: u64,
    limit: SlotLimit,
}

impl JobTable {
    /// No job yet; at most `max_active` slots held at once.
    pub(super) fn new(max_active: usize) -> Self {
        Self {
            set: JoinSet::new(),
            tasks: HashMap::new(),
            jobs: HashMap::new(),
            next_seq: 0,
            limit: SlotLimit::new(max_active),
        }
    }

    /// Jobs running or followed.
    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when no job task runs.
    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Slots this pod's jobs hold (the API's active jobs of this pod).
    pub(super) fn active(&self) -> usize {
        self.jobs.values().filter(|j| j.phase.holds_slot()).count()
    }

    /// The key's slots left to the team at `now` (the learnt limit).
    pub(super) fn capacity(&self, now: Instant) -> usize {
        self.limit.get(now)
    }

    /// Judges the limit's answers again against the peers' records of
    /// their moments (see [`SlotLimit::judge`]).
    pub(super) fn judge(&mut self, now: Instant, peers_at: impl Fn(i64) -> usize) {
        self.limit.judge(now, peers_at);
    }

    /// When the learnt limit may rise without a new answer.
    pub(super) fn capacity_change(&self, now: Instant) -> Option<Instant> {
        self.limit.next_change(now)
    }

    /// The next job number.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Starts `task`, job `seq` (`id`, covering `spec`), at `phase`.
    pub(super) fn start(
        &mut self,
        seq: u64,
        id: JobId,
        spec: JobSpec,
        phase: Phase,
        task: impl Future<Output = JobOutcome> + Send + 'static,
        span: tracing::Span,
    ) {
        let handle = self.set.spawn(task);
        self.tasks.insert(handle.id(), seq);
        self.jobs.insert(seq, Job { id, spec, phase, span });
    }

    /// The job number of journal job `id`, if it runs here.
    pub(super) fn seq_of(&self, id: &str) -> Option<u64> {
        self.jobs.iter().find(|(_, j)| &*j.id == id).map(|(seq, _)| *seq)
    }

    /// Job `seq` moved to `phase`; returns whether that changed the slots
    /// it holds. A move that is not part of a job's life is logged (and
    /// taken: the task knows where its job is).
    pub(super) fn set_phase(&mut self, seq: u64, phase: Phase) -> bool {
        let Some(job) = self.jobs.get_mut(&seq) else {
            return false;
        };
        if job.phase == phase {
            return false;
        }
        if let Err(e) = job.phase.to(phase) {
            warn!(job = %job.id, error = %e, "unexpected job phase change");
        }
        let changed = job.phase.holds_slot() != phase.holds_slot();
        job.phase = phase;
        changed
    }

    /// A submit of job `seq` was accepted; the API said `remaining` slots
    /// are left besides the jobs it has: this pod's (job `seq` and those
    /// running, or unresolved: they may run; not those whose submit is
    /// still on its way) and `peers` of the team's other pods.
    pub(super) fn accepted(&mut self, seq: u64, remaining: Option<u32>, peers: usize, at_ms: i64) {
        let at_api = self
            .jobs
            .iter()
            .filter(|(s, j)| **s == seq || matches!(j.phase, Phase::Running | Phase::Unresolved))
            .count();
        let view = TeamView {
            own: at_api,
            peers,
            at_ms,
        };
        self.limit.on_accepted(Instant::now(), view, remaining);
    }

    /// A submit of job `seq` got 429: the limit leaves the team what it
    /// holds (`peers` of the other pods'). Returns the limit before and after.
    pub(super) fn rate_limited(&mut self, seq: u64, peers: usize, at_ms: i64) -> (usize, usize) {
        let now = Instant::now();
        let before = self.limit.get(now);
        // The refused job holds no slot at the API.
        let held = self
            .jobs
            .iter()
            .filter(|(s, j)| **s != seq && j.phase.holds_slot())
            .count();
        let view = TeamView {
            own: held,
            peers,
            at_ms,
        };
        self.limit.on_rate_limited(now, view);
        (before, self.limit.get(now))
    }

    /// Waits for the next job task to end (pending forever when none runs).
    pub(super) async fn join_next(&mut self) -> Finished {
        let joined = match self.set.join_next_with_id().await {
            Some(j) => j,
            None => std::future::pending().await,
        };
        let (task, outcome) = match joined {
            Ok((task, outcome)) => (task, Ok(outcome)),
            Err(e) => (e.id(), Err(e)),
        };
        let seq = self.tasks.remove(&task).unwrap_or_default();
        let job = self.jobs.remove(&seq);
        Finished { seq, job, outcome }
    }

    /// Aborts every job task (shutdown grace over).
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

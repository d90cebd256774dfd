//! The running jobs and their slots: which job task is which job, what each
//! covers and which API job it became, how many may run (AIMD, see
//! [`SlotLimit`]), and the recoveries that hold new submits back.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use super::slots::SlotLimit;
use crate::jobs::JobOutcome;
use crate::model::JobSpec;

/// One running job (or recovery).
pub(super) struct RunningJob {
    /// What it covers; `None` for a recovery (covers what its file says).
    pub(super) spec: Option<JobSpec>,
    /// The API's id, once accepted.
    pub(super) batch_id: Option<Arc<str>>,
    /// A submit of this job got 429.
    pub(super) rate_limited: bool,
}

/// A job task that ended.
pub(super) struct Finished {
    /// The job, if it was known.
    pub(super) job: Option<RunningJob>,
    /// Its outcome, or why the task did not return one.
    pub(super) outcome: Result<JobOutcome, JoinError>,
}

/// The running jobs.
pub(super) struct JobTable {
    set: JoinSet<JobOutcome>,
    tasks: HashMap<Id, u64>,
    jobs: HashMap<u64, RunningJob>,
    known_batches: HashSet<Arc<str>>,
    recovering: usize,
    next_seq: u64,
    limit: SlotLimit,
}

impl JobTable {
    /// No job yet; at most `max_active` at once.
    pub(super) fn new(max_active: usize) -> Self {
        Self {
            set: JoinSet::new(),
            tasks: HashMap::new(),
            jobs: HashMap::new(),
            known_batches: HashSet::new(),
            recovering: 0,
            next_seq: 0,
            limit: SlotLimit::new(max_active),
        }
    }

    /// Jobs (and recoveries) running.
    pub(super) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when no job task runs.
    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// A new job may start: a slot is free and no recovery is running
    /// (its identifiers are unknown until its results are in).
    pub(super) fn can_start(&self) -> bool {
        self.jobs.len() < self.limit.get() && self.recovering == 0
    }

    /// The next job number.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Starts job `seq` covering `spec`.
    pub(super) fn start(&mut self, seq: u64, spec: JobSpec, task: impl Future<Output = JobOutcome> + Send + 'static) {
        self.spawn(seq, Some(spec), None, task);
    }

    /// Starts recovery `seq` of `batch_id`, unless that job is already
    /// known here (running or being recovered); returns whether it started.
    pub(super) fn recover(
        &mut self,
        seq: u64,
        batch_id: Arc<str>,
        task: impl Future<Output = JobOutcome> + Send + 'static,
    ) -> bool {
        if !self.known_batches.insert(batch_id.clone()) {
            return false;
        }
        self.recovering += 1;
        self.spawn(seq, None, Some(batch_id), task);
        true
    }

    /// Whether `batch_id` is running or being recovered here.
    pub(super) fn knows(&self, batch_id: &str) -> bool {
        self.known_batches.contains(batch_id)
    }

    fn spawn(
        &mut self,
        seq: u64,
        spec: Option<JobSpec>,
        batch_id: Option<Arc<str>>,
        task: impl Future<Output = JobOutcome> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.tasks.insert(handle.id(), seq);
        self.jobs.insert(
            seq,
            RunningJob {
                spec,
                batch_id,
                rate_limited: false,
            },
        );
    }

    /// The API accepted job `seq` as `batch_id`; returns what it covers.
    pub(super) fn submitted(&mut self, seq: u64, batch_id: Arc<str>) -> Option<&JobSpec> {
        let job = self.jobs.get_mut(&seq)?;
        job.batch_id = Some(batch_id.clone());
        self.known_batches.insert(batch_id);
        job.spec.as_ref()
    }

    /// The API id of job `seq`, once accepted.
    pub(super) fn batch_id(&self, seq: u64) -> Option<&Arc<str>> {
        self.jobs.get(&seq)?.batch_id.as_ref()
    }

    /// A submit of job `seq` got 429: multiplicative decrease relative to
    /// what runs. Returns the limit before and after.
    pub(super) fn rate_limited(&mut self, seq: u64) -> (usize, usize) {
        let before = self.limit.get();
        self.limit.on_rate_limited(self.jobs.len());
        if let Some(job) = self.jobs.get_mut(&seq) {
            job.rate_limited = true;
        }
        (before, self.limit.get())
    }

    /// A job completed without a 429: additive increase.
    pub(super) fn succeeded(&mut self) {
        self.limit.on_success();
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
        let job = self.tasks.remove(&task).and_then(|seq| self.jobs.remove(&seq));
        if let Some(j) = &job {
            if let Some(bid) = &j.batch_id {
                self.known_batches.remove(bid);
            }
            if j.spec.is_none() {
                self.recovering -= 1;
            }
        }
        Finished { job, outcome }
    }

    /// Aborts every job task (shutdown grace over).
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

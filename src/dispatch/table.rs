//! The running jobs and their slots: which job task is which job, what each
//! covers and which API job it became, how many may run (AIMD, see
//! [`SlotLimit`]; a steady job at its first poll lends its slot early),
//! and the adoptions of unknown coverage (and the start-up
//! reconciliation) that hold new submits back.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use super::slots::SlotLimit;
use crate::jobs::JobOutcome;
use crate::model::JobSpec;

/// One running job (or adoption, or reconciliation).
pub(super) struct RunningJob {
    /// What it covers, when known (a job, or an adoption of a journaled job).
    pub(super) spec: Option<JobSpec>,
    /// It holds new submits back until it ends (its coverage is unknown).
    pub(super) blocking: bool,
    /// The API's id, once accepted.
    pub(super) batch_id: Option<Arc<str>>,
    /// A submit of this job got 429.
    pub(super) rate_limited: bool,
}

/// A job task that ended.
pub(super) struct Finished {
    /// Its job number.
    pub(super) seq: u64,
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
    /// Jobs holding one of the key's active-job slots: from their submit
    /// until the API reports them completed or failed.
    holding: HashSet<u64>,
    /// Steady jobs at their first poll, which have most likely ended: their
    /// slots go to the next batches before the poll's answer confirms it.
    due: HashSet<u64>,
    /// Whether due jobs lend their slots: not after an early start met a
    /// 429, until a job's end is confirmed.
    lending: bool,
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
            holding: HashSet::new(),
            due: HashSet::new(),
            lending: true,
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
        self.holding.len() < self.limit.get() && self.recovering == 0
    }

    /// Jobs holding a slot (the API's active jobs of this pod).
    pub(super) fn active(&self) -> usize {
        self.holding.len()
    }

    /// The API reports job `seq` ended: its slot is free, whatever remains
    /// to be done with its results. Returns whether it held one (or was due).
    pub(super) fn ended(&mut self, seq: u64) -> bool {
        let held = self.holding.remove(&seq) | self.due.remove(&seq);
        self.lending |= held;
        held
    }

    /// Job `seq` has most likely ended (a steady job at its first poll):
    /// its slot may be taken before that is confirmed, unless lending
    /// stopped. Returns whether it lends its slot.
    pub(super) fn due(&mut self, seq: u64) -> bool {
        let lent = self.lending && self.holding.remove(&seq);
        if lent {
            self.due.insert(seq);
        }
        lent
    }

    /// An early start met a 429: the due jobs still run, most likely. They
    /// hold their slots again, and lend none until an end is confirmed.
    pub(super) fn stop_lending(&mut self) {
        self.lending = false;
        self.holding.extend(self.due.drain());
    }

    /// Job `seq` was due but still runs: it holds its slot again.
    pub(super) fn still_running(&mut self, seq: u64) {
        if self.due.remove(&seq) {
            self.holding.insert(seq);
        }
    }

    /// Whether a job started now may take the slot of a due job (one not
    /// yet confirmed free, here or in the pod's share of the key).
    pub(super) fn starts_early(&self) -> bool {
        !self.due.is_empty()
    }

    /// Job `seq` submits again: it holds a slot again.
    pub(super) fn resubmitting(&mut self, seq: u64) {
        if self.jobs.contains_key(&seq) {
            self.due.remove(&seq);
            self.holding.insert(seq);
        }
    }

    /// The next job number.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Starts job `seq` covering `spec`.
    pub(super) fn start(&mut self, seq: u64, spec: JobSpec, task: impl Future<Output = JobOutcome> + Send + 'static) {
        self.spawn(seq, Some(spec), None, false, task);
        self.holding.insert(seq);
    }

    /// Starts adopting `batch_id` as `seq` (covering `spec` when known;
    /// an adoption of unknown coverage holds new submits back), unless that
    /// job is already running or adopted here; returns whether it started.
    pub(super) fn adopt(
        &mut self,
        seq: u64,
        batch_id: Arc<str>,
        spec: Option<JobSpec>,
        task: impl Future<Output = JobOutcome> + Send + 'static,
    ) -> bool {
        if self.known_batches.contains(&batch_id) {
            return false;
        }
        self.known_batches.insert(batch_id.clone());
        let blocking = spec.is_none();
        self.spawn(seq, spec, Some(batch_id), blocking, task);
        self.holding.insert(seq);
        true
    }

    /// Starts `task`, which holds new submits back until it ends (the
    /// start-up reconciliation).
    pub(super) fn hold(&mut self, seq: u64, task: impl Future<Output = JobOutcome> + Send + 'static) {
        self.spawn(seq, None, None, true, task);
    }

    /// The job number of `batch_id`, if it runs here.
    pub(super) fn seq_of(&self, batch_id: &str) -> Option<u64> {
        self.jobs
            .iter()
            .find(|(_, j)| j.batch_id.as_deref() == Some(batch_id))
            .map(|(seq, _)| *seq)
    }

    fn spawn(
        &mut self,
        seq: u64,
        spec: Option<JobSpec>,
        batch_id: Option<Arc<str>>,
        blocking: bool,
        task: impl Future<Output = JobOutcome> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.tasks.insert(handle.id(), seq);
        if blocking {
            self.recovering += 1;
        }
        self.jobs.insert(
            seq,
            RunningJob {
                spec,
                blocking,
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
        self.limit.on_rate_limited(self.holding.len());
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
        let seq = self.tasks.remove(&task).unwrap_or_default();
        let job = self.jobs.remove(&seq);
        self.holding.remove(&seq);
        self.due.remove(&seq);
        if let Some(j) = &job {
            if let Some(bid) = &j.batch_id {
                self.known_batches.remove(bid);
            }
            if j.blocking {
                self.recovering -= 1;
            }
        }
        Finished { seq, job, outcome }
    }

    /// Aborts every job task (shutdown grace over).
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

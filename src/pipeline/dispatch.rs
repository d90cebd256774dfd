//! Dispatch: the single owner of every pending identifier. It answers from
//! the result cache, attaches repeats to the identifier already pending
//! (in an open batch or a running job), hands batches to jobs while a job
//! slot is free (AIMD-adapted, see [`SlotLimit`]), fans each job's results
//! out to every record that carried the identifier, and records which jobs
//! cover which offsets so that commit metadata can name them. Jobs named in
//! the metadata of newly assigned partitions are recovered before any new
//! job is submitted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use rustc_hash::{FxBuildHasher, FxHashMap};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::batch::Batcher;
use crate::config::Config;
use crate::decode::{detect, IdentifierType};
use crate::jobs::results::{has_matches, Matches, ResultRow};
use crate::jobs::slots::SlotLimit;
use crate::jobs::{JobContext, JobEvent, JobOutcome, JobSpec};
use crate::metrics::Metrics;
use crate::sink::{Fatal, InputRecord, Resolution, Sink};
use crate::source::offsets::OffsetTracker;
use crate::source::{SourceEvent, Work};

/// Pending identifiers and cache entries are keyed by the normalised value
/// alone: a normalised email never holds ':' and a profile URL always holds
/// "://", so the two kinds cannot collide, and lookups need no allocation.
type Key = String;

/// A resolved identifier kept for `cache.ttl`.
pub struct Cached {
    matches: Matches,
    batch_id: Arc<str>,
    resolved_at: Arc<str>,
}

/// Records waiting for one identifier, and the job resolving it (if any).
struct Pending {
    recs: Vec<InputRecord>,
    job: Option<u64>,
}

struct RunningJob {
    spec: Option<JobSpec>,
    batch_id: Option<Arc<str>>,
    rate_limited: bool,
}

/// How the dispatcher stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown requested; in-flight jobs finished or timed out.
    Shutdown,
    /// The source ended.
    SourceClosed,
}

/// Dispatcher state.
pub struct Dispatcher {
    batcher: Batcher,
    waiters: FxHashMap<Key, Pending>,
    missing_tries: HashMap<Key, u32>,
    cache: Option<Cache<Key, Arc<Cached>, FxBuildHasher>>,
    jobs: JoinSet<JobOutcome>,
    tasks: HashMap<Id, u64>,
    running: HashMap<u64, RunningJob>,
    known_batches: HashSet<Arc<str>>,
    recovering: usize,
    next_seq: u64,
    limit: SlotLimit,
    ctx: Arc<JobContext>,
    sink: Arc<Sink>,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
}

impl Dispatcher {
    /// A dispatcher for `cfg`.
    pub fn new(
        cfg: &Config,
        ctx: Arc<JobContext>,
        sink: Arc<Sink>,
        tracker: Arc<Mutex<OffsetTracker>>,
        fatal: Arc<Fatal>,
    ) -> Self {
        let cache = (!cfg.cache.ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(cfg.cache.max_entries)
                .time_to_live(cfg.cache.ttl)
                .build_with_hasher(FxBuildHasher)
        });
        Self {
            batcher: Batcher::new(cfg.batch.max_size, cfg.batch.linger),
            waiters: FxHashMap::default(),
            missing_tries: HashMap::new(),
            cache,
            jobs: JoinSet::new(),
            tasks: HashMap::new(),
            running: HashMap::new(),
            known_batches: HashSet::new(),
            recovering: 0,
            next_seq: 0,
            limit: SlotLimit::new(cfg.api.max_active_jobs),
            metrics: ctx.metrics.clone(),
            ctx,
            sink,
            tracker,
            fatal,
        }
    }

    /// Runs until `stop` fires (then lets running jobs finish within
    /// `grace`) or the source closes.
    pub async fn run(
        mut self,
        mut rx: UnboundedReceiver<SourceEvent>,
        mut events: UnboundedReceiver<JobEvent>,
        stop: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<Stopped, String> {
        tokio::pin!(stop);
        let stopped = loop {
            self.dispatch();
            let deadline = self.batcher.next_deadline();
            let can_start = self.running.len() < self.limit.get() && self.recovering == 0;
            tokio::select! {
                biased;
                _ = &mut stop => break Stopped::Shutdown,
                _ = self.fatal.notify.notified() => return Err(self.fatal.get().unwrap_or_default()),
                Some(ev) = events.recv() => self.event(ev),
                Some(joined) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => self.finished(joined).await?,
                input = rx.recv() => match input {
                    Some(SourceEvent::Records(batch)) => {
                        for w in batch {
                            self.accept(w).await?;
                        }
                    }
                    Some(SourceEvent::Recover(ids)) => self.recover(ids),
                    None => break Stopped::SourceClosed,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && can_start => {}
            }
        };
        // Shutdown: no new jobs; running ones get `grace` to publish.
        info!(
            running = self.running.len(),
            "dispatcher stopping; waiting for running jobs"
        );
        let until = Instant::now() + grace;
        while !self.jobs.is_empty() {
            tokio::select! {
                Some(ev) = events.recv() => self.event(ev),
                Some(joined) = self.jobs.join_next_with_id() => self.finished(joined).await?,
                _ = tokio::time::sleep_until(until) => {
                    warn!(running = self.running.len(), "shutdown.timeout reached; abandoning running jobs (their records stay uncommitted)");
                    self.jobs.abort_all();
                    break;
                }
            }
        }
        Ok(stopped)
    }

    /// Starts jobs while a slot is free and a batch is ready.
    fn dispatch(&mut self) {
        while self.running.len() < self.limit.get() && self.recovering == 0 {
            // While the key is refused, only the job already retrying probes it.
            if self.ctx.health.api_refused() && !self.running.is_empty() {
                break;
            }
            let Some(spec) = self.batcher.next_job(Instant::now()) else {
                break;
            };
            let Some(spec) = self.prune_stale(spec) else { continue };
            self.metrics.batch_submitted(spec.kind.as_str(), spec.ids.len());
            let seq = self.new_seq();
            let handle = self.jobs.spawn(self.ctx.clone().run(seq, spec.clone()));
            self.start(handle.id(), seq, Some(spec));
        }
    }

    fn new_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn start(&mut self, task: Id, seq: u64, spec: Option<JobSpec>) {
        self.tasks.insert(task, seq);
        self.running.insert(
            seq,
            RunningJob {
                spec,
                batch_id: None,
                rate_limited: false,
            },
        );
        self.metrics.set_active_jobs(self.running.len());
    }

    /// Drops identifiers whose every record belongs to a revoked partition.
    fn prune_stale(&mut self, mut spec: JobSpec) -> Option<JobSpec> {
        let t = self.tracker.lock().expect("tracker");
        spec.ids.retain(|id| {
            let live = self
                .waiters
                .get(id.as_str())
                .is_some_and(|p| p.recs.iter().any(|r| t.is_live(&r.pos)));
            if !live {
                self.waiters.remove(id.as_str());
            }
            live
        });
        (!spec.ids.is_empty()).then_some(spec)
    }

    /// Starts recovering jobs named in commit metadata; no new job starts
    /// until they are done, so their identifiers are not paid for twice.
    fn recover(&mut self, ids: Vec<String>) {
        for id in ids {
            let batch_id: Arc<str> = id.into();
            if !self.known_batches.insert(batch_id.clone()) {
                continue;
            }
            info!(%batch_id, "recovering a job named in commit metadata");
            self.recovering += 1;
            let seq = self.new_seq();
            let handle = self.jobs.spawn(self.ctx.clone().recover(seq, batch_id.clone()));
            self.start(handle.id(), seq, None);
            if let Some(job) = self.running.get_mut(&seq) {
                job.batch_id = Some(batch_id);
            }
        }
    }

    fn event(&mut self, ev: JobEvent) {
        match ev {
            JobEvent::Submitted { seq, batch_id } => {
                let Some(job) = self.running.get_mut(&seq) else { return };
                job.batch_id = Some(batch_id.clone());
                self.known_batches.insert(batch_id.clone());
                let Some(spec) = &job.spec else { return };
                let mut t = self.tracker.lock().expect("tracker");
                for id in &spec.ids {
                    if let Some(p) = self.waiters.get_mut(id.as_str()) {
                        p.job = Some(seq);
                        for r in &p.recs {
                            t.add_job(&r.pos, &batch_id);
                        }
                    }
                }
            }
            JobEvent::RateLimited { seq } => {
                let before = self.limit.get();
                self.limit.on_rate_limited(self.running.len());
                if let Some(job) = self.running.get_mut(&seq) {
                    job.rate_limited = true;
                }
                if self.limit.get() < before {
                    warn!(
                        limit = self.limit.get(),
                        "429 on submit: the key's job allowance is shared; fewer job slots"
                    );
                }
            }
        }
    }

    async fn accept(&mut self, w: Work) -> Result<(), String> {
        let (kind, key) = (w.id.kind, w.id.value);
        if let Some(p) = self.waiters.get_mut(&key) {
            if let Some(bid) = p
                .job
                .and_then(|seq| self.running.get(&seq))
                .and_then(|j| j.batch_id.as_ref())
            {
                self.tracker.lock().expect("tracker").add_job(&w.rec.pos, bid);
            }
            p.recs.push(w.rec);
            self.metrics.credits_saved("dedupe", 1);
            return Ok(());
        }
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.metrics.credits_saved("cache", 1);
            return self.publish_one(&w.rec, kind, &key, &hit).await;
        }
        self.batcher.push(kind, key.clone(), Instant::now());
        self.waiters.insert(
            key,
            Pending {
                recs: vec![w.rec],
                job: None,
            },
        );
        Ok(())
    }

    async fn publish_one(&self, rec: &InputRecord, kind: IdentifierType, key: &str, c: &Cached) -> Result<(), String> {
        if !self.is_live(rec) {
            return Ok(());
        }
        let r = Resolution {
            identifier: key,
            identifier_type: kind.as_str(),
            matches: &c.matches,
            matched: has_matches(&c.matches),
            batch_id: &c.batch_id,
            resolved_at: &c.resolved_at,
        };
        self.sink.send_output(rec, &r).await.map_err(|e| e.to_string())
    }

    async fn finished(&mut self, joined: Result<(Id, JobOutcome), JoinError>) -> Result<(), String> {
        let (task, outcome) = match joined {
            Ok((task, outcome)) => (task, Ok(outcome)),
            Err(e) => (e.id(), Err(e)),
        };
        let job = self.tasks.remove(&task).and_then(|seq| self.running.remove(&seq));
        if let Some(bid) = job.as_ref().and_then(|j| j.batch_id.as_ref()) {
            self.known_batches.remove(bid);
        }
        let result = match outcome {
            Err(e) => {
                if job.as_ref().is_some_and(|j| j.spec.is_none()) {
                    self.recovering -= 1;
                }
                if e.is_panic() {
                    error!(error = %e, "job task panicked; requeueing its batch");
                    if let Some(spec) = job.and_then(|j| j.spec) {
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
                if !job.is_some_and(|j| j.rate_limited) {
                    self.limit.on_success();
                }
                self.publish(spec, batch_id, results, missing).await
            }
            Ok(JobOutcome::Rejected { spec, message }) => {
                if spec.ids.len() == 1 {
                    warn!(identifier_type = spec.kind.as_str(), %message, "API rejected an identifier; dead-lettering it");
                    self.dead_letter(spec, "api_rejected", &message).await
                } else {
                    // Isolate the offending identifiers by halving.
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
            }
            Ok(JobOutcome::Failed { spec, message }) => {
                warn!(size = spec.ids.len(), %message, "job failed after every attempt; dead-lettering its records");
                self.dead_letter(spec, "job_failed", &message).await
            }
            Ok(JobOutcome::Recovered { batch_id, rows }) => {
                self.recovering -= 1;
                self.use_recovered(batch_id, rows).await
            }
            Ok(JobOutcome::RecoveryFailed { batch_id, message }) => {
                self.recovering -= 1;
                info!(%batch_id, %message, "recovered job not usable; its identifiers go through new jobs");
                Ok(())
            }
        };
        // The slot is released once the results are handed to the producer.
        self.metrics.set_active_jobs(self.running.len());
        result
    }

    /// Answers pending records from a recovered job's rows and caches them.
    async fn use_recovered(&mut self, batch_id: Arc<str>, rows: Vec<ResultRow>) -> Result<(), String> {
        let resolved_at = now_rfc3339();
        let mut answered = 0u64;
        for row in rows {
            let key = row.matched_on;
            let cached = Arc::new(Cached {
                matches: row.matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
            });
            if let Some(p) = self.waiters.remove(&key) {
                for rec in &p.recs {
                    self.publish_one(rec, detect(&key), &key, &cached).await?;
                }
                answered += p.recs.len() as u64;
            }
            if let Some(c) = &self.cache {
                c.insert(key, cached);
            }
        }
        let waiters = &self.waiters;
        self.batcher.retain(|_, id| waiters.contains_key(id));
        self.metrics.credits_saved("recovery", answered);
        info!(%batch_id, answered, "recovered job's results reused");
        Ok(())
    }

    async fn publish(
        &mut self,
        spec: JobSpec,
        batch_id: Arc<str>,
        results: HashMap<String, Matches>,
        missing: Vec<String>,
    ) -> Result<(), String> {
        let resolved_at = now_rfc3339();
        let kind = spec.kind;
        for (id, matches) in results {
            let key = id;
            self.missing_tries.remove(&key);
            let cached = Arc::new(Cached {
                matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
            });
            if let Some(p) = self.waiters.remove(&key) {
                for rec in &p.recs {
                    self.publish_one(rec, kind, &key, &cached).await?;
                }
            }
            if let Some(c) = &self.cache {
                c.insert(key, cached);
            }
        }
        if !missing.is_empty() {
            let mut retry = Vec::new();
            let mut give_up = Vec::new();
            for id in missing {
                let tries = self.missing_tries.entry(id.clone()).or_insert(0);
                *tries += 1;
                if *tries < self.ctx.cfg.max_job_attempts {
                    retry.push(id);
                } else {
                    self.missing_tries.remove(&id);
                    give_up.push(id);
                }
            }
            warn!(%batch_id, retry = retry.len(), give_up = give_up.len(), "identifiers missing from the result file");
            if !retry.is_empty() {
                self.batcher.push_ready_front(JobSpec { kind, ids: retry });
            }
            if !give_up.is_empty() {
                let msg = format!("absent from the results of job {batch_id} after every attempt");
                self.dead_letter(JobSpec { kind, ids: give_up }, "missing_result", &msg)
                    .await?;
            }
        }
        Ok(())
    }

    async fn dead_letter(&mut self, spec: JobSpec, reason: &'static str, message: &str) -> Result<(), String> {
        for id in spec.ids {
            let key = id;
            self.missing_tries.remove(&key);
            for rec in self.waiters.remove(&key).map(|p| p.recs).unwrap_or_default() {
                if self.is_live(&rec) {
                    self.sink
                        .send_dead_letter(&rec, reason, message)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn is_live(&self, rec: &InputRecord) -> bool {
        self.tracker.lock().expect("tracker").is_live(&rec.pos)
    }
}

fn now_rfc3339() -> Arc<str> {
    chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .into()
}

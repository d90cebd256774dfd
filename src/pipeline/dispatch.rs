//! Dispatch: the single owner of every pending identifier. It answers from
//! the result cache, attaches repeats to the identifier already pending
//! (in an open batch or a running job), hands batches to jobs while a job
//! slot is free, and fans each job's results out to every record that
//! carried the identifier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::batch::Batcher;
use crate::config::Config;
use crate::decode::IdentifierType;
use crate::jobs::results::{has_matches, Matches};
use crate::jobs::{JobContext, JobOutcome, JobSpec};
use crate::metrics::Metrics;
use crate::server::Health;
use crate::sink::{Fatal, InputRecord, Resolution, Sink};
use crate::source::offsets::OffsetTracker;
use crate::source::Work;

type Key = (IdentifierType, String);

/// A resolved identifier kept for `cache.ttl`.
pub struct Cached {
    matches: Matches,
    batch_id: Arc<str>,
    resolved_at: Arc<str>,
}

/// Dispatcher state.
pub struct Dispatcher {
    batcher: Batcher,
    waiters: HashMap<Key, Vec<InputRecord>>,
    missing_tries: HashMap<Key, u32>,
    cache: Option<Cache<Key, Arc<Cached>>>,
    jobs: JoinSet<JobOutcome>,
    running: HashMap<tokio::task::Id, JobSpec>,
    limit: usize,
    ctx: Arc<JobContext>,
    sink: Arc<Sink>,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    fatal: Arc<Fatal>,
}

/// How the dispatcher stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown requested; in-flight jobs finished or timed out.
    Shutdown,
    /// The source ended.
    SourceClosed,
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
                .build()
        });
        Self {
            batcher: Batcher::new(cfg.batch.max_size, cfg.batch.linger),
            waiters: HashMap::new(),
            missing_tries: HashMap::new(),
            cache,
            jobs: JoinSet::new(),
            running: HashMap::new(),
            limit: cfg.api.max_active_jobs,
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
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
        mut rx: UnboundedReceiver<Work>,
        stop: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<Stopped, String> {
        tokio::pin!(stop);
        let stopped = loop {
            self.dispatch().map_err(|e| e.to_string())?;
            let deadline = self.batcher.next_deadline();
            let can_start = self.running.len() < self.limit;
            tokio::select! {
                biased;
                _ = &mut stop => break Stopped::Shutdown,
                _ = self.fatal.notify.notified() => return Err(self.fatal.get().unwrap_or_default()),
                Some(joined) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => self.finished(joined).await?,
                work = rx.recv() => match work {
                    Some(w) => self.accept(w).await?,
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
    fn dispatch(&mut self) -> Result<(), String> {
        while self.running.len() < self.limit {
            // While the key is refused, only the job already retrying probes it.
            if self.health.api_refused() && !self.running.is_empty() {
                break;
            }
            let Some(spec) = self.batcher.next_job(Instant::now()) else {
                break;
            };
            let Some(spec) = self.prune_stale(spec) else { continue };
            self.metrics.batch_submitted(spec.kind.as_str(), spec.ids.len());
            let handle = self.jobs.spawn(self.ctx.clone().run(spec.clone()));
            self.running.insert(handle.id(), spec);
            self.metrics.set_active_jobs(self.running.len());
        }
        Ok(())
    }

    /// Drops identifiers whose every record belongs to a revoked partition.
    fn prune_stale(&mut self, mut spec: JobSpec) -> Option<JobSpec> {
        let t = self.tracker.lock().expect("tracker");
        spec.ids.retain(|id| {
            let key = (spec.kind, id.clone());
            let live = self
                .waiters
                .get(&key)
                .is_some_and(|recs| recs.iter().any(|r| t.is_live(&r.pos)));
            if !live {
                self.waiters.remove(&key);
            }
            live
        });
        (!spec.ids.is_empty()).then_some(spec)
    }

    async fn accept(&mut self, w: Work) -> Result<(), String> {
        let key = (w.id.kind, w.id.value);
        if let Some(recs) = self.waiters.get_mut(&key) {
            recs.push(w.rec);
            self.metrics.credits_saved("dedupe", 1);
            return Ok(());
        }
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            self.metrics.credits_saved("cache", 1);
            let r = Resolution {
                identifier: &key.1,
                identifier_type: key.0.as_str(),
                matches: &hit.matches,
                matched: has_matches(&hit.matches),
                batch_id: &hit.batch_id,
                resolved_at: &hit.resolved_at,
            };
            return self.sink.send_output(&w.rec, &r).await.map_err(|e| e.to_string());
        }
        self.batcher.push(key.0, key.1.clone(), Instant::now());
        self.waiters.insert(key, vec![w.rec]);
        Ok(())
    }

    async fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, JobOutcome), tokio::task::JoinError>,
    ) -> Result<(), String> {
        let outcome = match joined {
            Ok((id, outcome)) => {
                self.running.remove(&id);
                outcome
            }
            Err(e) => {
                let spec = self.running.remove(&e.id());
                self.metrics.set_active_jobs(self.running.len());
                if e.is_panic() {
                    error!(error = %e, "job task panicked; requeueing its batch");
                    if let Some(spec) = spec {
                        self.batcher.push_ready_front(spec);
                    }
                }
                return Ok(());
            }
        };
        let result = match outcome {
            JobOutcome::Done {
                spec,
                batch_id,
                results,
                missing,
            } => self.publish(spec, batch_id, results, missing).await,
            JobOutcome::Rejected { spec, message } => {
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
            JobOutcome::Failed { spec, message } => {
                warn!(size = spec.ids.len(), %message, "job failed after every attempt; dead-lettering its records");
                self.dead_letter(spec, "job_failed", &message).await
            }
        };
        // The slot is released once the results are handed to the producer.
        self.metrics.set_active_jobs(self.running.len());
        result
    }

    async fn publish(
        &mut self,
        spec: JobSpec,
        batch_id: Arc<str>,
        results: HashMap<String, Matches>,
        missing: Vec<String>,
    ) -> Result<(), String> {
        let resolved_at: Arc<str> = chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
        let kind = spec.kind;
        for (id, matches) in results {
            let key = (kind, id);
            self.missing_tries.remove(&key);
            let recs = self.waiters.remove(&key).unwrap_or_default();
            let cached = Arc::new(Cached {
                matches,
                batch_id: batch_id.clone(),
                resolved_at: resolved_at.clone(),
            });
            let r = Resolution {
                identifier: &key.1,
                identifier_type: kind.as_str(),
                matches: &cached.matches,
                matched: has_matches(&cached.matches),
                batch_id: &batch_id,
                resolved_at: &resolved_at,
            };
            for rec in recs.iter().filter(|rec| self.is_live(rec)) {
                self.sink.send_output(rec, &r).await.map_err(|e| e.to_string())?;
            }
            if let Some(c) = &self.cache {
                c.insert(key, cached);
            }
        }
        if !missing.is_empty() {
            let mut retry = Vec::new();
            let mut give_up = Vec::new();
            for id in missing {
                let tries = self.missing_tries.entry((kind, id.clone())).or_insert(0);
                *tries += 1;
                if *tries < self.ctx.cfg.max_job_attempts {
                    retry.push(id);
                } else {
                    self.missing_tries.remove(&(kind, id.clone()));
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
            let key = (spec.kind, id);
            self.missing_tries.remove(&key);
            for rec in self.waiters.remove(&key).unwrap_or_default() {
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

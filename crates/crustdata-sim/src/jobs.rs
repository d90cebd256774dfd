//! The job store: every job with its wall-clock schedule, the per-key index
//! of active jobs (limits, credits, request rates), completion and billing,
//! listing, and forgetting after `job_retention`. Guarded by one mutex that
//! each request holds only briefly; no operation scans all jobs ever.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::config::SimConfig;
use super::directory::MatchType;
use super::errors::ApiError;
use super::stats::{IdentHistory, SimStats};

mod create;

/// Where a job is in its lifecycle.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Pending or processing, depending on the clock.
    Active,
    /// Finished with results.
    Completed {
        completed_at: DateTime<Utc>,
        result_count: u64,
    },
    /// Finished without results; nothing billed.
    Failed {
        completed_at: DateTime<Utc>,
        error_message: String,
    },
}

/// One batch job. Cheap to clone (identifiers are shared).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: Uuid,
    pub seq: u64,
    pub key: Arc<str>,
    pub kind: MatchType,
    pub identifiers: Arc<Vec<String>>,
    pub webhook_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub processing_at: Instant,
    pub finish_at: Instant,
    /// Submit-to-finish time; `completed_at` is `created_at` plus this, as a
    /// real service records when the work ended, not when someone looked.
    pub duration: Duration,
    pub seed: u64,
    pub match_rate: f64,
    /// Number of submitted values that resolve to a person.
    pub matched: u64,
    /// History hashes of the matched values, consumed when billing.
    pub matched_hashes: Arc<Vec<u64>>,
    pub phase: Phase,
    /// Created by another client of the key ([`Store::create_foreign`]):
    /// billed apart in `foreign_credits_charged`, kept out of the identifier
    /// history.
    pub foreign: bool,
}

impl Job {
    /// The public status string at `now`.
    pub fn status(&self, now: Instant) -> &'static str {
        match self.phase {
            Phase::Active if now < self.processing_at => "pending",
            Phase::Active => "processing",
            Phase::Completed { .. } => "completed",
            Phase::Failed { .. } => "failed",
        }
    }
}

/// A validated submit, prepared outside the lock.
#[derive(Debug)]
pub(crate) struct NewJob {
    pub kind: MatchType,
    pub identifiers: Vec<String>,
    pub webhook_url: Option<String>,
    pub matched_hashes: Vec<u64>,
    /// Distinct history hashes of all submitted values.
    pub distinct_hashes: Vec<u64>,
    pub any_unmatched: bool,
    /// Values that need real-time retrieval under the realistic time model.
    pub unknown: usize,
}

/// A job whose webhook must be sent: it finished (or, with
/// `webhook_on_processing`, it started processing).
#[derive(Debug)]
pub(crate) struct Finished {
    pub job: Job,
}

/// API endpoint families with separate request-rate windows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Submit = 0,
    Poll = 1,
    List = 2,
}

#[derive(Debug, Default)]
struct KeyState {
    active: Vec<Uuid>,
    order: BTreeMap<u64, Uuid>,
    credits_spent: u64,
    windows: [VecDeque<Instant>; 3],
}

/// All mutable simulator state behind the mutex.
#[derive(Debug)]
pub(crate) struct Store {
    jobs: HashMap<Uuid, Job>,
    keys: HashMap<Arc<str>, KeyState>,
    due: BinaryHeap<Reverse<(Instant, Uuid)>>,
    /// Jobs whose webhook is called when they start processing.
    processing: BinaryHeap<Reverse<(Instant, Uuid)>>,
    retention: VecDeque<(Instant, Uuid)>,
    history: IdentHistory,
    pub stats: SimStats,
    rng: StdRng,
    next_seq: u64,
    /// Foreign jobs created so far (names their generated identifiers).
    next_foreign: u64,
    /// (submit instant, active duration) of the last [`INTERVALS`]
    /// finished jobs.
    intervals: VecDeque<(Instant, Duration)>,
}

/// How many finished jobs' intervals are kept (for plots).
const INTERVALS: usize = 100_000;

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl Store {
    pub fn new(seed: u64) -> Store {
        Store {
            jobs: HashMap::new(),
            keys: HashMap::new(),
            due: BinaryHeap::new(),
            processing: BinaryHeap::new(),
            retention: VecDeque::new(),
            history: IdentHistory::default(),
            stats: SimStats::default(),
            intervals: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            next_seq: 0,
            next_foreign: 0,
        }
    }

    /// True with probability `p` (seeded RNG).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// A duration drawn uniformly from `[lo, hi]`.
    pub fn uniform(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.rng.random::<f64>())
    }

    /// Uniform random integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n.max(1))
    }

    /// Enforces the per-key, per-endpoint requests-per-minute limit.
    pub fn check_rate(&mut self, key: &Arc<str>, ep: Endpoint, limit: u32, now: Instant) -> Result<(), ApiError> {
        if limit == 0 {
            return Ok(());
        }
        let window = Duration::from_secs(60);
        let q = &mut self.keys.entry(key.clone()).or_default().windows[ep as usize];
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            let reset = q.front().map_or(window, |t| window - now.duration_since(*t));
            self.stats.rate_limited_429 += 1;
            self.stats.rate_limited_rpm += 1;
            return Err(ApiError::RateLimited {
                message: format!("rate limit of {limit} requests per minute exceeded"),
                limit: u64::from(limit),
                reset_secs: ceil_secs(reset),
            });
        }
        q.push_back(now);
        Ok(())
    }

    /// Finishes job `id` if its time has come: decides failure, bills matches.
    fn finish(&mut self, id: Uuid, now: Instant, cfg: &SimConfig) -> Option<Finished> {
        let due = self
            .jobs
            .get(&id)
            .is_some_and(|j| matches!(j.phase, Phase::Active) && j.finish_at <= now);
        if !due {
            return None;
        }
        let fail = self.chance(cfg.job_failure_rate);
        let job = self.jobs.get_mut(&id)?;
        let completed_at = job.created_at + chrono::Duration::from_std(job.duration).unwrap_or_default();
        if fail {
            job.phase = Phase::Failed {
                completed_at,
                error_message: "Internal error while processing the batch; nothing was billed. Please resubmit."
                    .to_string(),
            };
            self.stats.jobs_failed += 1;
        } else {
            job.phase = Phase::Completed {
                completed_at,
                result_count: job.matched,
            };
            self.stats.jobs_completed += 1;
            self.stats.identifiers_matched += job.matched;
            self.stats.credits_charged += job.matched;
            if job.foreign {
                self.stats.foreign_credits_charged += job.matched;
            } else {
                let mut again = 0;
                for h in job.matched_hashes.iter() {
                    if self.history.charge(*h) {
                        again += 1;
                    }
                }
                self.stats.credits_recharged += again;
                if again > 0 {
                    tracing::warn!(batch_id = %id, credits = again, "identifiers charged again");
                }
            }
        }
        job.matched_hashes = Arc::new(Vec::new());
        self.stats.busy_slot_seconds += job.duration.as_secs_f64();
        if self.intervals.len() == INTERVALS {
            self.intervals.pop_front();
        }
        self.intervals.push_back((job.finish_at - job.duration, job.duration));
        let job = job.clone();
        if let Some(ks) = self.keys.get_mut(&job.key) {
            ks.active.retain(|a| *a != id);
            if matches!(job.phase, Phase::Completed { .. }) {
                ks.credits_spent += job.matched;
            }
        }
        self.stats.active_jobs = self.stats.active_jobs.saturating_sub(1);
        Some(Finished { job })
    }

    /// Finishes every job whose time has come (the sweeper's tick).
    pub fn finish_due(&mut self, now: Instant, cfg: &SimConfig) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            out.extend(self.finish(id, now, cfg));
        }
        out
    }

    /// Jobs still active that started processing by `now` and want a
    /// callback for it.
    pub fn processing_started(&mut self, now: Instant) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id))) = self.processing.peek().copied() {
            if at > now {
                break;
            }
            self.processing.pop();
            if let Some(job) = self.jobs.get(&id).filter(|j| matches!(j.phase, Phase::Active)) {
                out.push(Finished { job: job.clone() });
            }
        }
        out
    }

    /// Forgets finished jobs older than `retention`.
    pub fn forget_old(&mut self, now: Instant, retention: Duration) {
        while let Some((created, id)) = self.retention.front().copied() {
            if now.duration_since(created) < retention {
                break;
            }
            let still_active = self.jobs.get(&id).is_some_and(|j| matches!(j.phase, Phase::Active));
            if still_active {
                break;
            }
            self.retention.pop_front();
            if let Some(job) = self.jobs.remove(&id) {
                if let Some(ks) = self.keys.get_mut(&job.key) {
                    ks.order.remove(&job.seq);
                }
                self.stats.jobs_forgotten += 1;
            }
        }
    }

    /// Finishes the due active jobs of one key.
    fn settle_key(&mut self, key: &Arc<str>, now: Instant, cfg: &SimConfig) -> Vec<Finished> {
        let ids: Vec<Uuid> = self.keys.get(key).map(|k| k.active.clone()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.finish(id, now, cfg)).collect()
    }

    /// What the rate-limit headers of a submit say for `key` at `now`:
    /// (limit, remaining, seconds until the earliest active job finishes).
    pub fn limits(&self, key: &str, cfg: &SimConfig, now: Instant) -> (u64, u64, u64) {
        let active: Vec<&Job> = self
            .keys
            .get(key)
            .map(|k| k.active.iter().filter_map(|id| self.jobs.get(id)).collect())
            .unwrap_or_default();
        let remaining = (cfg.max_active_jobs as u64).saturating_sub(active.len() as u64);
        let reset = active
            .iter()
            .map(|j| j.finish_at.saturating_duration_since(now))
            .min()
            .map_or(0, ceil_secs);
        (cfg.max_active_jobs as u64, remaining, reset)
    }

    /// Every finished job's (submit instant, active duration), oldest first.
    pub fn intervals(&self) -> Vec<(Instant, Duration)> {
        self.intervals.iter().copied().collect()
    }

    /// Looks up a job of `key`, finishing it first if its time has come.
    pub fn poll(&mut self, key: &str, id: Uuid, now: Instant, cfg: &SimConfig) -> (Option<Job>, Option<Finished>) {
        let finished = self.finish(id, now, cfg);
        let job = self.jobs.get(&id).filter(|j| &*j.key == key).cloned();
        (job, finished)
    }

    /// Looks up any job by id (for downloads, which carry no API key).
    pub fn get(&self, id: &Uuid) -> Option<Job> {
        self.jobs.get(id).cloned()
    }

    /// Lists `key`'s jobs newest first, starting below the `cursor` sequence.
    /// Returns the page and whether more jobs match.
    pub fn list(
        &self,
        key: &str,
        status: Option<&str>,
        cursor: Option<u64>,
        limit: usize,
        now: Instant,
    ) -> (Vec<Job>, bool) {
        let Some(ks) = self.keys.get(key) else {
            return (Vec::new(), false);
        };
        let upper = cursor.unwrap_or(u64::MAX);
        let mut page = Vec::new();
        let mut more = false;
        for id in ks.order.range(..upper).rev().map(|(_, id)| id) {
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            if status.is_some_and(|s| s != job.status(now)) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(job.clone());
        }
        (page, more)
    }

    /// Forgets what each key has spent (used when `credit_balance` changes).
    pub fn reset_credits(&mut self) {
        for ks in self.keys.values_mut() {
            ks.credits_spent = 0;
        }
    }

    /// Resets counters and identifier history; keeps jobs (active count is recomputed).
    pub fn reset_stats(&mut self) {
        let active = self.keys.values().map(|k| k.active.len() as u64).sum();
        self.stats = SimStats {
            active_jobs: active,
            max_concurrent_active_jobs: active,
            ..SimStats::default()
        };
        self.history.clear();
        self.intervals.clear();
    }
}

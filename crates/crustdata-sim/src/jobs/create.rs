//! Creating jobs: preparing a submit outside the lock ([`NewJob::prepare`]),
//! the checked path of `POST /batch/person/identify` ([`Store::submit`]:
//! injected 500, credits, active-job limit) and the unchecked path of another
//! client's job on the same key ([`Store::create_foreign`]).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::{ceil_secs, Finished, Job, NewJob, Phase, Store};
use crate::config::{JobTimeModel, SimConfig};
use crate::directory::{identifier_hash, Directory, MatchType};
use crate::errors::ApiError;
use crate::timing::{self, needs_retrieval, Plan};

/// Seed of the identifier-history hash (independent of the directory seed).
const HISTORY_SEED: u64 = 0x5EED_0F1D;

impl NewJob {
    /// Hashes and matches the identifiers of a job (outside the store lock).
    pub(crate) fn prepare(
        directory: &Directory,
        cfg: &SimConfig,
        kind: MatchType,
        identifiers: Vec<String>,
        webhook_url: Option<String>,
    ) -> NewJob {
        let mut matched_hashes = Vec::new();
        let mut distinct_hashes = Vec::with_capacity(identifiers.len());
        let mut unknown = 0;
        let realistic = cfg.job_time_model == JobTimeModel::Realistic;
        for ident in &identifiers {
            let h = identifier_hash(HISTORY_SEED, ident);
            distinct_hashes.push(h);
            if directory.matches(kind, cfg.seed, cfg.match_rate, ident) {
                matched_hashes.push(h);
            }
            if realistic && needs_retrieval(cfg.seed, cfg.unknown_rate, ident) {
                unknown += 1;
            }
        }
        distinct_hashes.sort_unstable();
        distinct_hashes.dedup();
        let any_unmatched = matched_hashes.len() < identifiers.len();
        NewJob {
            kind,
            identifiers,
            webhook_url,
            matched_hashes,
            distinct_hashes,
            any_unmatched,
            unknown,
        }
    }
}

impl Store {
    /// Creates a job after the fault, credit and active-job checks.
    /// Returns the job and any jobs of this key that finished meanwhile.
    pub fn submit(
        &mut self,
        key: &Arc<str>,
        new: NewJob,
        cfg: &SimConfig,
        now: Instant,
    ) -> (Result<Job, ApiError>, Vec<Finished>) {
        if self.chance(cfg.error_rate_submit) {
            self.stats.injected_500s += 1;
            return (Err(ApiError::Internal), Vec::new());
        }
        let finished = self.settle_key(key, now, cfg);
        let ks = self.keys.entry(key.clone()).or_default();
        if let Some(balance) = cfg.credit_balance {
            let remaining = balance.saturating_sub(ks.credits_spent);
            if remaining == 0 {
                return (Err(ApiError::InsufficientCredits { remaining }), finished);
            }
        }
        if ks.active.len() >= cfg.max_active_jobs {
            let earliest = ks
                .active
                .iter()
                .filter_map(|id| self.jobs.get(id))
                .map(|j| j.finish_at)
                .min()
                .unwrap_or(now);
            self.stats.rate_limited_429 += 1;
            self.stats.rate_limited_active_jobs += 1;
            let err = ApiError::RateLimited {
                message: format!("too many active batch jobs: at most {} per user", cfg.max_active_jobs),
                limit: cfg.max_active_jobs as u64,
                reset_secs: ceil_secs(earliest.saturating_duration_since(now)),
            };
            return (Err(err), finished);
        }

        let plan = timing::plan(
            cfg,
            &mut self.rng,
            new.identifiers.len(),
            new.any_unmatched,
            new.unknown,
        );
        let s = &mut self.stats;
        s.submits_accepted += 1;
        s.identifiers_submitted += new.identifiers.len() as u64;
        for h in &new.distinct_hashes {
            let (first, second) = self.history.record_job(*h);
            s.unique_identifiers_submitted += u64::from(first);
            s.identifiers_submitted_more_than_once += u64::from(second);
        }
        let job = self.insert(key, new, plan, cfg, now, false);
        (Ok(job), finished)
    }

    /// Creates a job of `key` as another client sharing the key would: no
    /// rate limits, credit check or faults, and the given `duration` (not
    /// scaled). It holds one of the key's active-job slots, is listed and
    /// billed like any job, counts in `foreign_jobs` (not `submits_accepted`)
    /// and stays out of the identifier history.
    pub(crate) fn create_foreign(
        &mut self,
        key: &Arc<str>,
        new: NewJob,
        duration: Duration,
        cfg: &SimConfig,
        now: Instant,
    ) -> Job {
        let plan = timing::given(cfg, duration);
        self.stats.foreign_jobs += 1;
        self.insert(key, new, plan, cfg, now, true)
    }

    /// The next foreign job's number (names generated identifiers).
    pub(crate) fn next_foreign_number(&mut self) -> u64 {
        self.next_foreign += 1;
        self.next_foreign
    }

    /// Creates and indexes an accepted job with its schedule.
    fn insert(&mut self, key: &Arc<str>, new: NewJob, plan: Plan, cfg: &SimConfig, now: Instant, foreign: bool) -> Job {
        let Plan { total, pending } = plan;
        let id = Uuid::new_v4();
        let seq = self.next_seq;
        self.next_seq += 1;
        let job = Job {
            id,
            seq,
            key: key.clone(),
            kind: new.kind,
            identifiers: Arc::new(new.identifiers),
            webhook_url: new.webhook_url,
            created_at: Utc::now(),
            processing_at: now + pending,
            finish_at: now + total,
            duration: total,
            seed: cfg.seed,
            match_rate: cfg.match_rate,
            matched: new.matched_hashes.len() as u64,
            matched_hashes: Arc::new(new.matched_hashes),
            phase: Phase::Active,
            foreign,
        };
        let ks = self.keys.entry(key.clone()).or_default();
        ks.active.push(id);
        ks.order.insert(seq, id);
        let key_active = ks.active.len() as u64;

        let s = &mut self.stats;
        s.active_jobs += 1;
        s.max_concurrent_active_jobs = s.max_concurrent_active_jobs.max(s.active_jobs);
        s.max_active_jobs_per_key = s.max_active_jobs_per_key.max(key_active);
        self.due.push(Reverse((job.finish_at, id)));
        if cfg.webhook_on_processing && job.webhook_url.is_some() && job.processing_at < job.finish_at {
            self.processing.push(Reverse((job.processing_at, id)));
        }
        self.retention.push_back((now, id));
        self.jobs.insert(id, job.clone());
        job
    }
}

//! Counters of everything the simulator saw ([`SimStats`]) and the compact
//! per-identifier history (64-bit hashes) behind the duplicate and
//! re-charge metrics.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Snapshot of the simulator's counters, served by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Submits that created a job.
    pub submits_accepted: u64,
    /// Submits answered with any error status.
    pub submits_rejected_total: u64,
    /// Submits rejected with 400 (validation, version header).
    pub submits_rejected_400: u64,
    /// Submits rejected with 401 (missing or unknown key).
    pub submits_rejected_401: u64,
    /// Submits rejected with 402 (insufficient credits).
    pub submits_rejected_402: u64,
    /// Submits rejected with 429 (active-job or request-rate limit).
    pub submits_rejected_429: u64,
    /// Submits answered with an injected 500.
    pub submits_rejected_500: u64,
    /// Submits answered with another status (an injected 404, 405, 415...).
    pub submits_rejected_other: u64,
    /// Submits the API accepted (the job exists) whose answer was lost: a
    /// 504, a cut connection or a late answer (all three kinds).
    pub submit_answers_lost: u64,
    /// Of `submit_answers_lost`: connections cut instead of answering.
    pub submit_answers_cut: u64,
    /// Of `submit_answers_lost`: answers delayed by `slow_response` (counted
    /// when decided, whether or not the client waited).
    pub submit_answers_slow: u64,
    /// Jobs created by another client of a key (`SimHandle::foreign_job`,
    /// `POST /_sim/jobs`); not in `submits_accepted`.
    pub foreign_jobs: u64,
    /// Every 429 answered, on any endpoint.
    pub rate_limited_429: u64,
    /// 429s caused by the active-job limit.
    pub rate_limited_active_jobs: u64,
    /// 429s caused by the requests-per-minute limit.
    pub rate_limited_rpm: u64,
    /// 401s answered on any API endpoint.
    pub unauthorized_401: u64,
    /// Successful polls (`GET /batch/{id}` answered 200).
    pub polls: u64,
    /// Polls answered 404 (unknown, forgotten or foreign job).
    pub polls_not_found: u64,
    /// Successful list calls.
    pub lists: u64,
    /// Downloads answered 200 (including deliberately corrupted bodies).
    pub downloads: u64,
    /// Downloads answered with an error status.
    pub download_errors: u64,
    /// Downloads whose body was deliberately corrupted, truncated or missing a line.
    pub downloads_damaged: u64,
    /// Injected 500s on any endpoint.
    pub injected_500s: u64,
    /// Jobs that reached `completed`.
    pub jobs_completed: u64,
    /// Jobs that reached `failed`.
    pub jobs_failed: u64,
    /// Jobs forgotten after `job_retention`.
    pub jobs_forgotten: u64,
    /// Active (pending or processing) jobs right now, all keys.
    pub active_jobs: u64,
    /// Maximum of `active_jobs` over time.
    pub max_concurrent_active_jobs: u64,
    /// Maximum number of active jobs any single key had at once.
    pub max_active_jobs_per_key: u64,
    /// Seconds jobs were active (submit to completed or failed), summed over
    /// finished jobs: the busy slot-seconds of the 5-jobs-per-key limit.
    pub busy_slot_seconds: f64,
    /// Identifiers in accepted submits (duplicates counted).
    pub identifiers_submitted: u64,
    /// Distinct identifiers (lowercased, trimmed) ever accepted.
    pub unique_identifiers_submitted: u64,
    /// Distinct identifiers that appeared in more than one accepted job.
    pub identifiers_submitted_more_than_once: u64,
    /// Result lines that matched a person in completed jobs.
    pub identifiers_matched: u64,
    /// Credits charged (1 per matched identifier of a completed job),
    /// foreign jobs included.
    pub credits_charged: u64,
    /// Of `credits_charged`: credits of foreign jobs (subtract them to get
    /// what the tested client spent).
    pub foreign_credits_charged: u64,
    /// Credits charged for an identifier that had already been charged before.
    pub credits_recharged: u64,
    /// Webhooks delivered (2xx answer).
    pub webhooks_sent: u64,
    /// Webhooks deliberately not sent (`webhook_drop_rate`).
    pub webhooks_dropped: u64,
    /// Webhooks that failed (connection error, timeout or non-2xx answer).
    pub webhooks_failed: u64,
}

/// Bit set in a history entry once the identifier has been charged.
const CHARGED: u32 = 1 << 31;

/// Per-identifier history keyed by a 64-bit hash: job count and charged flag.
#[derive(Debug, Default)]
pub(crate) struct IdentHistory {
    entries: HashMap<u64, u32>,
}

impl IdentHistory {
    /// Records that one accepted job contained the (distinct) identifier `h`.
    /// Returns `(first time ever, now in exactly two jobs)`.
    pub(crate) fn record_job(&mut self, h: u64) -> (bool, bool) {
        let entry = self.entries.entry(h).or_insert(0);
        let jobs = *entry & !CHARGED;
        let first = jobs == 0;
        if jobs < !CHARGED {
            *entry += 1;
        }
        (first, jobs == 1)
    }

    /// Marks `h` as charged; returns true when it had been charged before.
    pub(crate) fn charge(&mut self, h: u64) -> bool {
        let entry = self.entries.entry(h).or_insert(0);
        let before = *entry & CHARGED != 0;
        *entry |= CHARGED;
        before
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.entries = HashMap::new();
    }
}

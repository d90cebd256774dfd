//! Pending identifiers: every record waiting for an identifier's result,
//! the job resolving it (once one does), and how often it was missing from
//! a result file.
//!
//! Keys are the normalised value alone: a normalised email never holds ':'
//! and a profile URL always holds "://", so the two kinds cannot collide,
//! and lookups need no allocation.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use crate::model::{IdentifierType, InputRecord, JobSpec};
use crate::offsets::OffsetTracker;

/// Records waiting for one identifier, and the job resolving it (if any).
struct Waiting {
    kind: IdentifierType,
    recs: Vec<InputRecord>,
    job: Option<u64>,
}

/// Every pending identifier.
#[derive(Default)]
pub(super) struct Pending {
    waiters: FxHashMap<String, Waiting>,
    missing_tries: HashMap<String, u32>,
}

impl Pending {
    /// Adds `rec` to the records waiting for `key` (which is pending).
    pub(super) fn push(&mut self, key: &str, rec: InputRecord) {
        if let Some(w) = self.waiters.get_mut(key) {
            w.recs.push(rec);
        }
    }

    /// Starts waiting for `key` (not yet pending) with its first record,
    /// resolved by job `job` when one already covers it.
    pub(super) fn insert(&mut self, kind: IdentifierType, key: String, rec: InputRecord, job: Option<u64>) {
        self.waiters.insert(
            key,
            Waiting {
                kind,
                recs: vec![rec],
                job,
            },
        );
    }

    /// The identifiers waiting for job `seq`, detached from it (it ended
    /// without answering them).
    pub(super) fn detach(&mut self, seq: u64) -> Vec<(IdentifierType, String)> {
        let mut out = Vec::new();
        for (key, w) in self.waiters.iter_mut() {
            if w.job == Some(seq) {
                w.job = None;
                out.push((w.kind, key.clone()));
            }
        }
        out
    }

    /// The identifiers waiting for job `from` wait for job `to` instead.
    pub(super) fn move_job(&mut self, from: u64, to: u64) {
        for w in self.waiters.values_mut() {
            if w.job == Some(from) {
                w.job = Some(to);
            }
        }
    }

    /// Whether `key` is pending.
    pub(super) fn contains(&self, key: &str) -> bool {
        self.waiters.contains_key(key)
    }

    /// Stops waiting for `key`; returns its records.
    pub(super) fn take(&mut self, key: &str) -> Vec<InputRecord> {
        self.waiters.remove(key).map(|w| w.recs).unwrap_or_default()
    }

    /// Notes that job `seq` resolves the identifiers of `spec`.
    pub(super) fn assign(&mut self, spec: &JobSpec, seq: u64) {
        for id in &spec.ids {
            self.set_job(id, seq);
        }
    }

    /// Notes that job `seq` resolves `key`.
    pub(super) fn set_job(&mut self, key: &str, seq: u64) {
        if let Some(w) = self.waiters.get_mut(key) {
            w.job = Some(seq);
        }
    }

    /// Drops from `spec` (and from pending) the identifiers whose every
    /// record belongs to a revoked partition; `None` if none is left.
    pub(super) fn prune_stale(&mut self, mut spec: JobSpec, tracker: &OffsetTracker) -> Option<JobSpec> {
        spec.ids.retain(|id| {
            let live = self
                .waiters
                .get(id.as_str())
                .is_some_and(|w| w.recs.iter().any(|r| tracker.is_live(&r.pos)));
            if !live {
                self.waiters.remove(id.as_str());
            }
            live
        });
        (!spec.ids.is_empty()).then_some(spec)
    }

    /// Drops every record of a revoked partition (not live in `tracker`),
    /// and the identifiers left without records; returns how many
    /// identifiers were dropped.
    pub(super) fn drop_revoked(&mut self, tracker: &OffsetTracker) -> usize {
        let before = self.waiters.len();
        self.waiters.retain(|_, w| {
            w.recs.retain(|r| tracker.is_live(&r.pos));
            !w.recs.is_empty()
        });
        before - self.waiters.len()
    }

    /// Counts one more absence of `key` from a result file; true while it
    /// has been missing fewer than `max_attempts` times (try again), false
    /// when it is given up (and the count forgotten).
    pub(super) fn missing_again(&mut self, key: &str, max_attempts: u32) -> bool {
        let tries = self.missing_tries.entry(key.to_string()).or_insert(0);
        *tries += 1;
        if *tries < max_attempts {
            true
        } else {
            self.missing_tries.remove(key);
            false
        }
    }

    /// Forgets the missing count of `key` (it was resolved or given up).
    pub(super) fn resolved(&mut self, key: &str) {
        self.missing_tries.remove(key);
    }
}

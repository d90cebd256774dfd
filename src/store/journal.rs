//! The job journal in memory: the latest record of every job the store
//! topic holds, applied in log order by [`lifecycle::apply`] (so every pod
//! agrees on each job's owner and stage), indexed by the identifiers of
//! the jobs in flight (to attach a record to the job already resolving
//! its identifier instead of paying for it again) and by the API's batch
//! ids (a job some journal owns is never taken for another's lost submit).
//!
//! Closed jobs keep their record (without identifiers) until it is
//! removed; the identifiers of a job closed with published results still
//! point to it while their results may not yet have reached this pod's
//! local store from other partitions of the topic: until the tail finds
//! them there ([`Journal::uncover`]), [`CLOSED_COVER`] after the close at
//! most (by the closing pod's clock, so that a job closed long ago and
//! read again in a restore covers nothing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::lifecycle::{self, Applied, JobId, Outcome, Record, Stage};

/// How long the identifiers of a job closed with published results still
/// point to it.
pub(crate) const CLOSED_COVER: Duration = Duration::from_secs(30);
/// What is left of the cover of a job closed at `closed_ms` (the closing
/// pod's clock) at `now_ms`: nothing once [`CLOSED_COVER`] has passed (its
/// results have had that long to reach the store; a restore reads many
/// jobs closed long ago).
fn cover_left(closed_ms: i64, now_ms: i64) -> Option<Duration> {
    let age = Duration::from_millis(now_ms.saturating_sub(closed_ms).max(0) as u64);
    CLOSED_COVER.checked_sub(age).filter(|d| !d.is_zero())
}

/// How often covers past their time are swept out.
const SWEEP: Duration = Duration::from_secs(5);
/// Removed jobs remembered, so that a late write cannot bring one back.
const REMOVED_KEPT: usize = 100_000;

/// Jobs by id, and the indices over them.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    jobs: HashMap<JobId, Record>,
    covering: HashMap<String, JobId>,
    /// Identifiers of jobs closed with results: the job that closed each
    /// last, and until when it covers it.
    closed_cover: HashMap<String, (Instant, JobId)>,
    /// Covers added since [`Self::take_fresh`]: (identifier, its result
    /// key, the job).
    fresh: Vec<(String, String, JobId)>,
    /// When expired covers are next swept out.
    next_sweep: Option<Instant>,
    /// Batch id -> (job, when it was accepted, ms; 0 when unknown).
    batches: HashMap<String, (JobId, i64)>,
    removed: HashSet<JobId>,
    removed_order: VecDeque<JobId>,
    /// Store-topic partition -> next offset applied by the tail.
    applied: HashMap<i32, i64>,
}

impl Journal {
    /// Applies job `id`'s next record (`None`: a tombstone) by the
    /// lifecycle's rule; returns what it did.
    pub(crate) fn apply(&mut self, id: &str, next: Option<Record>, now: Instant) -> Applied {
        let current = self.jobs.get(id);
        let applied = lifecycle::apply(current, next.as_ref(), self.removed.contains(id));
        match applied {
            Applied::Ignored => {}
            Applied::Removed => self.remove(id),
            Applied::Taken => {
                let next = next.expect("a taken record");
                self.take(id, next, now);
            }
        }
        applied
    }

    fn take(&mut self, id: &str, next: Record, now: Instant) {
        let job: JobId = JobId::from(id);
        for b in &next.earlier {
            self.batches.entry(b.clone()).or_insert((job.clone(), 0));
        }
        if let Some(b) = next.batch_id() {
            let at = match &next.stage {
                Stage::Accepted { at_ms, .. } => *at_ms,
                _ => self.batches.get(b).map_or(0, |(_, at)| *at),
            };
            self.batches.insert(b.to_string(), (job.clone(), at));
        }
        let cover = match next.stage {
            Stage::Closed {
                outcome: Outcome::Published,
                at_ms,
                ..
            } => cover_left(at_ms, chrono::Utc::now().timestamp_millis()),
            _ => None,
        };
        if let Some(left) = cover {
            // A closed record has no identifiers; the previous one had them.
            let until = now + left;
            for (x, _) in self.covering.iter().filter(|(_, j)| **j == job) {
                self.closed_cover.insert(x.clone(), (until, job.clone()));
                let key = super::record::tagged_result_key(&next.identifier_type, x);
                self.fresh.push((x.clone(), key, job.clone()));
            }
        }
        self.covering.retain(|_, j| *j != job);
        if next.in_flight() {
            for x in &next.ids {
                self.covering.insert(x.clone(), job.clone());
            }
        }
        self.jobs.insert(job, next);
        self.expire_cover(now);
    }

    fn remove(&mut self, id: &str) {
        let Some((job, _)) = self.jobs.remove_entry(id) else {
            return;
        };
        self.covering.retain(|_, j| *j != job);
        self.batches.retain(|_, (j, _)| *j != job);
        // Its closed cover, if any, points to nothing now (see `covering`)
        // and is swept out when it expires.
        if self.removed.insert(job.clone()) {
            self.removed_order.push_back(job);
            if self.removed_order.len() > REMOVED_KEPT {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed.remove(&old);
                }
            }
        }
    }

    fn expire_cover(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.closed_cover.retain(|_, (until, _)| *until > now);
        self.next_sweep = Some(now + SWEEP);
    }

    /// The covers added since the last call: (identifier, its result key,
    /// the job). Those whose results the local store already holds are
    /// then [`Self::uncover`]ed.
    pub(crate) fn take_fresh(&mut self) -> Vec<(String, String, JobId)> {
        std::mem::take(&mut self.fresh)
    }

    /// `value`'s result is in the local store: no closed job need cover it
    /// any more (only `job`'s cover, when given).
    pub(crate) fn uncover(&mut self, value: &str, job: Option<&JobId>) {
        if self
            .closed_cover
            .get(value)
            .is_some_and(|(_, j)| job.is_none_or(|job| j == job))
        {
            self.closed_cover.remove(value);
        }
    }

    /// Job `id`'s record.
    pub(crate) fn get(&self, id: &str) -> Option<Record> {
        self.jobs.get(id).cloned()
    }

    /// The job resolving `value`: one in flight, or one closed with
    /// published results less than [`CLOSED_COVER`] ago.
    pub(crate) fn covering(&self, value: &str, now: Instant) -> Option<(JobId, Record)> {
        if let Some(job) = self.covering.get(value) {
            return self.jobs.get(job).map(|r| (job.clone(), r.clone()));
        }
        self.closed_cover
            .get(value)
            .filter(|(until, _)| *until > now)
            .and_then(|(_, job)| self.jobs.get(job).map(|r| (job.clone(), r.clone())))
    }

    /// Whether a journal owns API job `batch_id`: when it was accepted
    /// (ms, 0 when unknown) and by whom (the clock that time is of).
    pub(crate) fn batch(&self, batch_id: &str) -> Option<(i64, String)> {
        let (job, at) = self.batches.get(batch_id)?;
        let owner = self.jobs.get(job).map(|r| r.owner.clone()).unwrap_or_default();
        Some((*at, owner))
    }

    /// Every job in flight.
    pub(crate) fn in_flight(&self) -> Vec<(JobId, Record)> {
        let mut out: Vec<(JobId, Record)> = self
            .jobs
            .iter()
            .filter(|(_, r)| r.in_flight())
            .map(|(j, r)| (j.clone(), r.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Closed jobs (id, owner) closed before `before_ms`.
    pub(crate) fn closed_before(&self, before_ms: i64) -> Vec<(JobId, String)> {
        self.jobs
            .iter()
            .filter(|(_, r)| matches!(r.stage, Stage::Closed { at_ms, .. } if at_ms < before_ms))
            .map(|(j, r)| (j.clone(), r.owner.clone()))
            .collect()
    }

    /// Jobs known, in flight and closed.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// The tail applied `partition` up to `next` (exclusive).
    pub(crate) fn note_offset(&mut self, partition: i32, next: i64) {
        let e = self.applied.entry(partition).or_insert(next);
        *e = (*e).max(next);
    }

    /// Whether the tail applied `partition` past `offset`.
    pub(crate) fn applied_past(&self, partition: i32, offset: i64) -> bool {
        self.applied.get(&partition).is_some_and(|n| *n > offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentifierType, JobSpec};

    fn spec(ids: &[&str]) -> JobSpec {
        JobSpec {
            kind: IdentifierType::BusinessEmail,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn accepted(r: &Record, batch: &str, at_ms: i64) -> Record {
        r.at(Stage::Accepted {
            attempt: 1,
            batch_id: batch.into(),
            at_ms,
        })
    }

    fn closed(r: &Record, outcome: Outcome, batch: Option<&str>) -> Record {
        r.at(Stage::Closed {
            outcome,
            batch_id: batch.map(str::to_string),
            at_ms: chrono::Utc::now().timestamp_millis(),
        })
    }

    #[test]
    fn jobs_in_flight_cover_their_identifiers_and_own_their_batches() {
        let now = Instant::now();
        let mut j = Journal::default();
        let r = Record::submitting(&spec(&["a@x.co", "b@x.co"]), "pod-a", 1);
        assert_eq!(j.apply("j1", Some(r.clone()), now), Applied::Taken);
        assert_eq!(j.covering("a@x.co", now).unwrap().0.as_ref(), "j1");
        assert_eq!(j.batch("b1"), None);
        j.apply("j1", Some(accepted(&r, "b1", 5)), now);
        assert_eq!(j.batch("b1"), Some((5, "pod-a".to_string())));
        assert_eq!(j.in_flight().len(), 1);
        j.apply("j1", Some(closed(&r, Outcome::Published, Some("b1"))), now);
        assert!(j.in_flight().is_empty());
        assert_eq!(
            j.covering("b@x.co", now).unwrap().1.batch_id(),
            Some("b1"),
            "published a moment ago: its identifiers still point to it"
        );
        assert!(j.covering("b@x.co", now + CLOSED_COVER).is_none());
        assert_eq!(j.batch("b1").map(|b| b.0), Some(5), "a closed job still owns its batch");
        assert_eq!(j.closed_before(i64::MAX).len(), 1);
        j.apply("j1", None, now);
        assert_eq!(j.len(), 0);
        assert_eq!(j.batch("b1"), None);
        assert_eq!(
            j.apply("j1", Some(r), now),
            Applied::Ignored,
            "a late write does not bring a removed job back"
        );
    }

    #[test]
    fn an_identifier_closed_twice_points_to_the_later_job_until_it_expires() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut j = Journal::default();
        for (id, batch, at) in [("j1", "b1", t0), ("j2", "b2", later)] {
            let r = Record::submitting(&spec(&["a@x.co"]), "pod-a", 1);
            j.apply(id, Some(r.clone()), at);
            j.apply(id, Some(closed(&r, Outcome::Published, Some(batch))), at);
        }
        assert_eq!(j.covering("a@x.co", later).unwrap().0.as_ref(), "j2");
        // j1's cover expires first and must not take j2's with it.
        let after_j1 = t0 + CLOSED_COVER + Duration::from_secs(1);
        let r = Record::submitting(&spec(&["c@x.co"]), "pod-a", 1);
        j.apply("j3", Some(r), after_j1);
        assert_eq!(j.covering("a@x.co", after_j1).unwrap().0.as_ref(), "j2");
        j.apply("j2", None, after_j1);
        assert!(j.covering("a@x.co", after_j1).is_none(), "a removed job covers nothing");
        j.apply(
            "j4",
            Some(Record::submitting(&spec(&["d@x.co"]), "pod-a", 1)),
            after_j1 + CLOSED_COVER,
        );
        assert!(j.closed_cover.is_empty(), "{:?}", j.closed_cover);
    }

    #[test]
    fn a_job_closed_long_ago_covers_nothing() {
        let now = Instant::now();
        let mut j = Journal::default();
        let r = Record::submitting(&spec(&["a@x.co"]), "pod-a", 1);
        j.apply("j1", Some(r.clone()), now);
        let long_ago = chrono::Utc::now().timestamp_millis() - CLOSED_COVER.as_millis() as i64;
        let old = r.at(Stage::Closed {
            outcome: Outcome::Published,
            batch_id: Some("b1".into()),
            at_ms: long_ago,
        });
        j.apply("j1", Some(old), now);
        assert!(
            j.covering("a@x.co", now).is_none(),
            "its results had time to reach the store"
        );
        assert!(j.closed_cover.is_empty());
        assert!(j.batch("b1").is_some(), "the batch stays owned");
        assert_eq!(cover_left(1_000, 1_000), Some(CLOSED_COVER));
        assert_eq!(cover_left(1_000, 21_000), Some(Duration::from_secs(10)));
        assert_eq!(cover_left(1_000, 31_000), None);
        assert_eq!(cover_left(9_000, 1_000), Some(CLOSED_COVER), "a clock ahead of ours");
    }

    #[test]
    fn a_cover_ends_when_the_result_is_in_the_store() {
        let now = Instant::now();
        let mut j = Journal::default();
        let r = Record::submitting(&spec(&["a@x.co", "b@x.co"]), "pod-a", 1);
        j.apply("j1", Some(r.clone()), now);
        j.apply("j1", Some(closed(&r, Outcome::Published, Some("b1"))), now);
        let mut fresh = j.take_fresh();
        fresh.sort();
        let keys: Vec<&str> = fresh.iter().map(|f| f.1.as_str()).collect();
        assert_eq!(keys, ["r/business_email/a@x.co", "r/business_email/b@x.co"]);
        assert!(j.take_fresh().is_empty());
        let other = JobId::from("j2");
        j.uncover("a@x.co", Some(&other));
        assert!(j.covering("a@x.co", now).is_some(), "only the job's own cover");
        j.uncover("a@x.co", Some(&fresh[0].2));
        j.uncover("b@x.co", None);
        assert!(j.covering("a@x.co", now).is_none());
        assert!(j.covering("b@x.co", now).is_none());
    }

    #[test]
    fn a_failed_or_released_job_covers_nothing() {
        let now = Instant::now();
        for outcome in [Outcome::Failed, Outcome::Released, Outcome::Rejected] {
            let mut j = Journal::default();
            let r = Record::submitting(&spec(&["a@x.co"]), "pod-a", 1);
            j.apply("j1", Some(r.clone()), now);
            j.apply("j1", Some(closed(&r, outcome, None)), now);
            assert!(j.covering("a@x.co", now).is_none(), "{outcome:?}");
        }
    }

    #[test]
    fn earlier_batches_of_a_job_stay_owned_and_claims_change_the_owner() {
        let now = Instant::now();
        let mut j = Journal::default();
        let r = Record::submitting(&spec(&["a@x.co"]), "pod-a", 1);
        j.apply("j1", Some(r.clone()), now);
        let again = Record {
            earlier: vec!["b-failed".into()],
            ..r.at(Stage::Submitting {
                attempt: 2,
                sent_at_ms: 7,
            })
        };
        j.apply("j1", Some(again.clone()), now);
        assert_eq!(j.batch("b-failed").map(|b| b.0), Some(0));
        assert_eq!(j.apply("j1", Some(again.claimed_by("pod-b")), now), Applied::Taken);
        assert_eq!(
            j.apply("j1", Some(again.claimed_by("pod-c")), now),
            Applied::Ignored,
            "the second claim loses"
        );
        assert_eq!(j.get("j1").unwrap().owner, "pod-b");
        assert_eq!(j.covering("a@x.co", now).unwrap().1.owner, "pod-b");
    }

    #[test]
    fn applied_offsets_only_move_forward() {
        let mut j = Journal::default();
        assert!(!j.applied_past(0, 5));
        j.note_offset(0, 6);
        j.note_offset(0, 3);
        assert!(j.applied_past(0, 5));
        assert!(!j.applied_past(0, 6));
    }
}

//! Offset tracking: which consumed offsets are still in flight, and which
//! offset is safe to commit per partition.
//!
//! A partition's commit watermark only advances over a contiguous run of
//! finished offsets: the safe offset is the smallest offset still in flight,
//! or one past the last consumed offset when nothing is. A later batch that
//! finishes first therefore never commits past an earlier unfinished one.
//! Every assignment gets a fresh epoch; completions that carry an older
//! epoch (work of a partition since revoked) are ignored.
//!
//! Each partition also remembers the API jobs covering its uncommitted
//! records; their ids travel in the commit metadata (see [`encode_jobs`]) so
//! that whoever owns the partition next can reuse their results instead of
//! paying for the same identifiers again.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A topic-partition.
pub type TopicPartition = (Arc<str>, i32);

/// Where a record came from, plus the assignment epoch it was consumed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePos {
    /// Input topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// Assignment epoch (see [`OffsetTracker::assign`]).
    pub epoch: u64,
}

#[derive(Debug)]
struct Entry {
    offset: i64,
    bytes: usize,
    done: bool,
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    pending: VecDeque<Entry>,
    /// One past the highest consumed offset, once something was consumed.
    next: Option<i64>,
    /// Last offset committed (or known committed) in this assignment.
    committed: Option<i64>,
    /// Jobs covering records of this partition: batch id -> highest offset.
    jobs: Vec<(Arc<str>, i64)>,
    /// The job list changed since the last commit.
    jobs_dirty: bool,
}

/// Prefix of the commit metadata written by this connector.
const META_PREFIX: &str = "identify/v1 jobs=";
/// At most this many job ids per partition (commit metadata is limited,
/// 4096 bytes by default on the broker).
pub const MAX_META_JOBS: usize = 64;

/// Commit metadata naming the jobs that cover uncommitted records.
pub fn encode_jobs<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.take(MAX_META_JOBS).collect();
    format!("{META_PREFIX}{}", ids.join(","))
}

/// The job ids in commit metadata written by [`encode_jobs`]; anything else
/// (another tool's metadata, garbage) yields none.
pub fn decode_jobs(meta: &str) -> Vec<String> {
    let Some(list) = meta.strip_prefix(META_PREFIX) else {
        return Vec::new();
    };
    list.split(',')
        .map(str::trim)
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .take(MAX_META_JOBS)
        .map(str::to_owned)
        .collect()
}

/// A commit to make: partition, offset and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPoint {
    /// The partition.
    pub tp: TopicPartition,
    /// The offset (next to read).
    pub offset: i64,
    /// Commit metadata (see [`encode_jobs`]).
    pub metadata: String,
}

/// The offset a partition may commit: the first unfinished offset, else one
/// past the last consumed offset, else nothing (nothing consumed yet).
pub fn safe_commit_offset(first_unfinished: Option<i64>, next: Option<i64>) -> Option<i64> {
    first_unfinished.or(next)
}

/// Per-partition in-flight offsets and the totals used for back-pressure.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: FxHashMap<TopicPartition, PartitionState>,
    next_epoch: u64,
    in_flight: usize,
    in_flight_bytes: usize,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a clean assignment of `tp`; returns its epoch.
    pub fn assign(&mut self, tp: TopicPartition) -> u64 {
        self.revoke(&tp);
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            tp,
            PartitionState {
                epoch,
                pending: VecDeque::new(),
                next: None,
                committed: None,
                jobs: Vec::new(),
                jobs_dirty: false,
            },
        );
        epoch
    }

    /// Forgets `tp` and everything still in flight for it.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        if let Some(state) = self.parts.remove(tp) {
            for e in state.pending.iter().filter(|e| !e.done) {
                self.in_flight -= 1;
                self.in_flight_bytes -= e.bytes;
            }
        }
    }

    /// The current epoch of `tp`, if assigned.
    pub fn epoch(&self, tp: &TopicPartition) -> Option<u64> {
        self.parts.get(tp).map(|s| s.epoch)
    }

    /// True if `pos` belongs to the current assignment of its partition.
    pub fn is_live(&self, pos: &SourcePos) -> bool {
        self.parts
            .get(&(pos.topic.clone(), pos.partition))
            .is_some_and(|s| s.epoch == pos.epoch)
    }

    /// Registers a consumed record. Returns false (and tracks nothing) if the
    /// partition is not assigned in that epoch or the offset goes backwards.
    pub fn track(&mut self, pos: &SourcePos, bytes: usize) -> bool {
        let Some(state) = self.parts.get_mut(&(pos.topic.clone(), pos.partition)) else {
            return false;
        };
        if state.epoch != pos.epoch || state.next.is_some_and(|n| pos.offset < n) {
            return false;
        }
        state.pending.push_back(Entry {
            offset: pos.offset,
            bytes,
            done: false,
        });
        state.next = Some(pos.offset + 1);
        // Where this assignment started reading needs no commit of its own.
        state.committed.get_or_insert(pos.offset);
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
        true
    }

    /// Registers a consumed record of the current assignment of its
    /// partition; `None` if the partition is not assigned.
    pub fn track_consumed(&mut self, topic: &Arc<str>, partition: i32, offset: i64, bytes: usize) -> Option<SourcePos> {
        let epoch = self.parts.get(&(topic.clone(), partition))?.epoch;
        let pos = SourcePos {
            topic: topic.clone(),
            partition,
            offset,
            epoch,
        };
        self.track(&pos, bytes).then_some(pos)
    }

    /// Marks a record finished (its output acknowledged). Returns false when
    /// the record is unknown, already finished or from an older epoch.
    pub fn complete(&mut self, pos: &SourcePos) -> bool {
        let Some(state) = self.parts.get_mut(&(pos.topic.clone(), pos.partition)) else {
            return false;
        };
        if state.epoch != pos.epoch {
            return false;
        }
        let Ok(i) = state.pending.binary_search_by_key(&pos.offset, |e| e.offset) else {
            return false;
        };
        let entry = &mut state.pending[i];
        if entry.done {
            return false;
        }
        entry.done = true;
        self.in_flight -= 1;
        self.in_flight_bytes -= entry.bytes;
        while state.pending.front().is_some_and(|e| e.done) {
            state.pending.pop_front();
        }
        true
    }

    /// The offset `tp` may commit now, if any.
    pub fn safe_offset(&self, tp: &TopicPartition) -> Option<i64> {
        let s = self.parts.get(tp)?;
        safe_commit_offset(s.pending.front().map(|e| e.offset), s.next)
    }

    /// Partitions whose safe offset moved past what was last committed, or
    /// whose covering jobs changed, with the metadata to commit.
    pub fn commit_candidates(&mut self) -> Vec<CommitPoint> {
        let mut out = Vec::new();
        for (tp, s) in self.parts.iter_mut() {
            let Some(safe) = safe_commit_offset(s.pending.front().map(|e| e.offset), s.next).or(s.committed) else {
                continue;
            };
            // Jobs whose records are all below the safe offset are done with.
            let before = s.jobs.len();
            s.jobs.retain(|(_, max)| *max >= safe);
            let moved = s.committed.is_none_or(|c| safe > c);
            if moved || s.jobs_dirty || s.jobs.len() != before {
                out.push(CommitPoint {
                    tp: tp.clone(),
                    offset: safe,
                    metadata: encode_jobs(s.jobs.iter().rev().map(|(id, _)| id.as_ref())),
                });
            }
        }
        out
    }

    /// The commit point of `tp` now (on revoke: offset and covering jobs, so
    /// the next owner can reuse the jobs' results).
    pub fn commit_point(&self, tp: &TopicPartition) -> Option<CommitPoint> {
        let s = self.parts.get(tp)?;
        let offset = safe_commit_offset(s.pending.front().map(|e| e.offset), s.next).or(s.committed)?;
        Some(CommitPoint {
            tp: tp.clone(),
            offset,
            metadata: encode_jobs(
                s.jobs
                    .iter()
                    .rev()
                    .filter(|(_, max)| *max >= offset)
                    .map(|(id, _)| id.as_ref()),
            ),
        })
    }

    /// Records that `point` was committed. The job list stays due for a
    /// commit if it changed while the commit was on its way.
    pub fn mark_committed(&mut self, point: &CommitPoint) {
        if let Some(s) = self.parts.get_mut(&point.tp) {
            if s.committed.is_none_or(|c| point.offset > c) {
                s.committed = Some(point.offset);
            }
            if encode_jobs(s.jobs.iter().rev().map(|(id, _)| id.as_ref())) == point.metadata {
                s.jobs_dirty = false;
            }
        }
    }

    /// Notes that job `batch_id` covers the record at `pos` (current epoch only).
    pub fn add_job(&mut self, pos: &SourcePos, batch_id: &Arc<str>) {
        let Some(s) = self.parts.get_mut(&(pos.topic.clone(), pos.partition)) else {
            return;
        };
        if s.epoch != pos.epoch {
            return;
        }
        Self::cover(s, batch_id, pos.offset);
    }

    /// Notes that job `batch_id` may cover records of `tp` up to `max_offset`
    /// (jobs recovered from commit metadata).
    pub fn add_recovered_job(&mut self, tp: &TopicPartition, batch_id: &Arc<str>, max_offset: i64) {
        if let Some(s) = self.parts.get_mut(tp) {
            Self::cover(s, batch_id, max_offset);
        }
    }

    fn cover(s: &mut PartitionState, batch_id: &Arc<str>, offset: i64) {
        match s.jobs.iter_mut().find(|(id, _)| id == batch_id) {
            Some((_, max)) => {
                if offset > *max {
                    *max = offset;
                }
            }
            None => {
                s.jobs.push((batch_id.clone(), offset));
                if s.jobs.len() > MAX_META_JOBS {
                    s.jobs.remove(0);
                }
                s.jobs_dirty = true;
            }
        }
    }

    /// Records still in flight for `tp`.
    pub fn pending_in(&self, tp: &TopicPartition) -> usize {
        self.parts
            .get(tp)
            .map_or(0, |s| s.pending.iter().filter(|e| !e.done).count())
    }

    /// Records in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Value bytes in flight across all partitions.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        (Arc::from("in"), 0)
    }

    fn pos(offset: i64, epoch: u64) -> SourcePos {
        SourcePos {
            topic: Arc::from("in"),
            partition: 0,
            offset,
            epoch,
        }
    }

    fn offsets(t: &mut OffsetTracker) -> Vec<i64> {
        t.commit_candidates().into_iter().map(|c| c.offset).collect()
    }

    #[test]
    fn a_job_added_while_a_commit_is_on_its_way_is_committed_next() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        t.track(&pos(0, e), 1);
        t.add_job(&pos(0, e), &Arc::from("job-a"));
        let c = t.commit_candidates();
        t.add_job(&pos(0, e), &Arc::from("job-b"));
        t.mark_committed(&c[0]);
        let next = t.commit_candidates();
        assert_eq!(next.len(), 1, "the newer job list is still due");
        assert_eq!(decode_jobs(&next[0].metadata), vec!["job-b", "job-a"]);
        t.mark_committed(&next[0]);
        assert!(t.commit_candidates().is_empty());
    }

    #[test]
    fn jobs_travel_in_commit_metadata_until_committed_past() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 0..10 {
            t.track(&pos(o, e), 1);
        }
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("job-a"), Arc::from("job-b"));
        t.add_job(&pos(2, e), &a);
        t.add_job(&pos(4, e), &a);
        t.add_job(&pos(7, e), &b);
        // The job list changed: commit the same position with new metadata.
        let c = t.commit_candidates();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].offset, 0);
        assert_eq!(decode_jobs(&c[0].metadata), vec!["job-b", "job-a"]);
        t.mark_committed(&c[0]);
        assert!(t.commit_candidates().is_empty());
        for o in 0..5 {
            t.complete(&pos(o, e));
        }
        let c = t.commit_candidates();
        assert_eq!(c[0].offset, 5);
        assert_eq!(
            decode_jobs(&c[0].metadata),
            vec!["job-b"],
            "job-a's records are all committed"
        );
        t.mark_committed(&c[0]);
        for o in 5..10 {
            t.complete(&pos(o, e));
        }
        let c = t.commit_candidates();
        assert_eq!(c[0].offset, 10);
        assert!(decode_jobs(&c[0].metadata).is_empty());
    }

    #[test]
    fn metadata_round_trip_and_foreign_metadata() {
        assert_eq!(
            decode_jobs(&encode_jobs(["a-1", "b_2"].into_iter())),
            vec!["a-1", "b_2"]
        );
        assert!(decode_jobs("").is_empty());
        assert!(decode_jobs("someone else's metadata").is_empty());
        assert_eq!(decode_jobs("identify/v1 jobs=ok,bad id,,x;y"), vec!["ok"]);
        let many: Vec<String> = (0..200).map(|i| format!("{i:036}")).collect();
        let meta = encode_jobs(many.iter().map(String::as_str));
        assert!(meta.len() < 4096);
        assert_eq!(decode_jobs(&meta).len(), MAX_META_JOBS);
    }

    #[test]
    fn nothing_consumed_nothing_to_commit() {
        let mut t = OffsetTracker::new();
        t.assign(tp());
        assert_eq!(t.safe_offset(&tp()), None);
        assert!(t.commit_candidates().is_empty());
    }

    #[test]
    fn out_of_order_completion_never_commits_past_unfinished() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 10..20 {
            assert!(t.track(&pos(o, e), 1));
        }
        // The later half finishes first.
        for o in 15..20 {
            assert!(t.complete(&pos(o, e)));
        }
        assert_eq!(t.safe_offset(&tp()), Some(10));
        for o in 10..14 {
            t.complete(&pos(o, e));
        }
        assert_eq!(t.safe_offset(&tp()), Some(14));
        t.complete(&pos(14, e));
        assert_eq!(t.safe_offset(&tp()), Some(20));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.in_flight_bytes(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in [3, 7, 8, 20] {
            t.track(&pos(o, e), 5);
        }
        assert_eq!(t.in_flight_bytes(), 20);
        t.complete(&pos(7, e));
        assert_eq!(t.safe_offset(&tp()), Some(3));
        t.complete(&pos(3, e));
        assert_eq!(t.safe_offset(&tp()), Some(8));
        t.complete(&pos(8, e));
        t.complete(&pos(20, e));
        assert_eq!(t.safe_offset(&tp()), Some(21));
    }

    #[test]
    fn stale_epoch_is_ignored_and_revoke_releases_budget() {
        let mut t = OffsetTracker::new();
        let e1 = t.assign(tp());
        t.track(&pos(0, e1), 10);
        t.track(&pos(1, e1), 10);
        assert_eq!(t.in_flight(), 2);
        t.revoke(&tp());
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.in_flight_bytes(), 0);
        let e2 = t.assign(tp());
        assert_ne!(e1, e2);
        assert!(!t.complete(&pos(0, e1)));
        assert!(!t.track(&pos(5, e1), 1));
        assert!(t.track(&pos(0, e2), 1));
        assert!(!t.is_live(&pos(0, e1)));
        assert!(t.is_live(&pos(0, e2)));
    }

    #[test]
    fn double_completion_and_unknown_offsets_are_rejected() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        t.track(&pos(0, e), 1);
        t.track(&pos(1, e), 1);
        assert!(t.complete(&pos(1, e)));
        assert!(!t.complete(&pos(1, e)));
        assert!(!t.complete(&pos(9, e)));
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn commit_candidates_only_when_moved() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        t.track(&pos(0, e), 1);
        t.complete(&pos(0, e));
        let c = t.commit_candidates();
        assert_eq!(c.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![1]);
        t.mark_committed(&c[0]);
        assert!(t.commit_candidates().is_empty());
        t.track(&pos(1, e), 1);
        assert!(t.commit_candidates().is_empty());
        t.complete(&pos(1, e));
        assert_eq!(offsets(&mut t), vec![2]);
    }

    #[test]
    fn the_starting_position_is_not_committed_again() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        t.track(&pos(40, e), 1);
        assert!(t.commit_candidates().is_empty(), "no progress yet");
        t.complete(&pos(40, e));
        assert_eq!(offsets(&mut t), vec![41]);
    }

    #[test]
    fn backwards_offsets_are_not_tracked() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        assert!(t.track(&pos(5, e), 1));
        assert!(!t.track(&pos(4, e), 1));
        assert!(!t.track(&pos(5, e), 1));
    }
}

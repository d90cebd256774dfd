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
//! The tracker is shared (behind a mutex) by the source thread, the
//! dispatcher and the producer's delivery callbacks. It also knows each
//! partition's oldest record not yet committed, for the lag in seconds.

use std::collections::VecDeque;
use std::sync::Arc;

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use crate::model::{SourcePos, TopicPartition};

#[derive(Debug)]
struct Entry {
    offset: i64,
    bytes: usize,
    /// The record's timestamp (ms since the epoch).
    ts_ms: i64,
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
    /// Finished records not yet committed, as (offset, timestamp): the
    /// first one, then the first one at or after each commit point offered
    /// since (so a commit of an earlier point leaves the next in view).
    finished: VecDeque<(i64, i64)>,
    /// The last commit point offered.
    offered: Option<i64>,
}

/// A commit to make: partition and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitPoint {
    /// The partition.
    pub(crate) tp: TopicPartition,
    /// The offset (next to read).
    pub(crate) offset: i64,
}

/// The list to commit (to the group, or with a transaction).
pub(crate) fn commit_list(points: &[CommitPoint]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(points.len());
    for c in points {
        let mut e = tpl.add_partition(&c.tp.0, c.tp.1);
        let _ = e.set_offset(Offset::Offset(c.offset));
    }
    tpl
}

/// The offset a partition may commit: the first unfinished offset, else one
/// past the last consumed offset, else nothing (nothing consumed yet).
pub(crate) fn safe_commit_offset(first_unfinished: Option<i64>, next: Option<i64>) -> Option<i64> {
    first_unfinished.or(next)
}

/// Per-partition in-flight offsets and the totals used for back-pressure.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    parts: FxHashMap<TopicPartition, PartitionState>,
    next_epoch: u64,
    revocations: u64,
    in_flight: usize,
    in_flight_bytes: usize,
}

impl OffsetTracker {
    /// An empty tracker.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a clean assignment of `tp`; returns its epoch.
    pub(crate) fn assign(&mut self, tp: TopicPartition) -> u64 {
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
                finished: VecDeque::new(),
                offered: None,
            },
        );
        epoch
    }

    /// Forgets `tp` and everything still in flight for it.
    pub(crate) fn revoke(&mut self, tp: &TopicPartition) {
        if let Some(state) = self.parts.remove(tp) {
            self.revocations += 1;
            for e in state.pending.iter().filter(|e| !e.done) {
                self.in_flight -= 1;
                self.in_flight_bytes -= e.bytes;
            }
        }
    }

    /// How many times a partition was revoked (or lost) so far: a job
    /// that saw this change while it waited may hold records that are no
    /// longer this pod's.
    pub(crate) fn revocations(&self) -> u64 {
        self.revocations
    }

    /// How many partitions are assigned.
    pub(crate) fn assigned(&self) -> usize {
        self.parts.len()
    }

    /// True if `pos` belongs to the current assignment of its partition.
    pub(crate) fn is_live(&self, pos: &SourcePos) -> bool {
        self.is_current(&(pos.topic.clone(), pos.partition), pos.epoch)
    }

    /// True if `tp` is assigned here.
    pub(crate) fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.parts.contains_key(tp)
    }

    /// True if `tp` is assigned here in `epoch`.
    pub(crate) fn is_current(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.parts.get(tp).is_some_and(|s| s.epoch == epoch)
    }

    /// Registers a consumed record (its timestamp `ts_ms`). Returns false
    /// (and tracks nothing) if the partition is not assigned in that epoch
    /// or the offset goes backwards.
    pub(crate) fn track(&mut self, pos: &SourcePos, bytes: usize, ts_ms: i64) -> bool {
        let Some(state) = self.parts.get_mut(&(pos.topic.clone(), pos.partition)) else {
            return false;
        };
        if state.epoch != pos.epoch || state.next.is_some_and(|n| pos.offset < n) {
            return false;
        }
        state.pending.push_back(Entry {
            offset: pos.offset,
            bytes,
            ts_ms,
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
    pub(crate) fn track_consumed(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        bytes: usize,
        ts_ms: i64,
    ) -> Option<SourcePos> {
        let epoch = self.parts.get(&(topic.clone(), partition))?.epoch;
        let pos = SourcePos {
            topic: topic.clone(),
            partition,
            offset,
            epoch,
        };
        self.track(&pos, bytes, ts_ms).then_some(pos)
    }

    /// Marks a record finished (its output acknowledged). Returns false when
    /// the record is unknown, already finished or from an older epoch.
    pub(crate) fn complete(&mut self, pos: &SourcePos) -> bool {
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
        // A commit never passes an unfinished record, so what leaves the
        // front here is not committed yet.
        while let Some(e) = state.pending.front().filter(|e| e.done) {
            let first_past_offer = |last: &(i64, i64)| state.offered.is_some_and(|p| last.0 < p && e.offset >= p);
            if state.finished.back().is_none_or(first_past_offer) {
                state.finished.push_back((e.offset, e.ts_ms));
            }
            state.pending.pop_front();
        }
        true
    }

    /// Each partition's oldest record not yet committed: the timestamp of
    /// the record at its commit point, once it was consumed (`None` when
    /// every record consumed is committed).
    pub(crate) fn oldest_uncommitted(&self) -> Vec<(TopicPartition, Option<i64>)> {
        self.parts
            .iter()
            .map(|(tp, s)| {
                let ts = s
                    .finished
                    .front()
                    .map(|f| f.1)
                    .or_else(|| s.pending.front().map(|e| e.ts_ms));
                (tp.clone(), ts)
            })
            .collect()
    }

    /// The offset `tp` may commit now, if any.
    #[cfg(test)]
    pub(crate) fn safe_offset(&self, tp: &TopicPartition) -> Option<i64> {
        let s = self.parts.get(tp)?;
        safe_commit_offset(s.pending.front().map(|e| e.offset), s.next)
    }

    /// Partitions whose safe offset moved past what was last committed.
    pub(crate) fn commit_candidates(&mut self) -> Vec<CommitPoint> {
        let mut out = Vec::new();
        for (tp, s) in self.parts.iter_mut() {
            let Some(safe) = safe_commit_offset(s.pending.front().map(|e| e.offset), s.next).or(s.committed) else {
                continue;
            };
            if s.committed.is_none_or(|c| safe > c) {
                s.offered = Some(safe);
                out.push(CommitPoint {
                    tp: tp.clone(),
                    offset: safe,
                });
            }
        }
        out
    }

    /// The commit point of `tp` now (on revoke).
    pub(crate) fn commit_point(&self, tp: &TopicPartition) -> Option<CommitPoint> {
        let s = self.parts.get(tp)?;
        let offset = safe_commit_offset(s.pending.front().map(|e| e.offset), s.next).or(s.committed)?;
        Some(CommitPoint { tp: tp.clone(), offset })
    }

    /// Records that `point` was committed.
    pub(crate) fn mark_committed(&mut self, point: &CommitPoint) {
        if let Some(s) = self.parts.get_mut(&point.tp) {
            if s.committed.is_none_or(|c| point.offset > c) {
                s.committed = Some(point.offset);
            }
            // Finished records the commit passed are committed; the first
            // one past its point (if any) is the oldest still waiting.
            while s.finished.front().is_some_and(|&(offset, _)| offset < point.offset) {
                s.finished.pop_front();
            }
        }
    }

    /// Records still in flight for `tp`.
    pub(crate) fn pending_in(&self, tp: &TopicPartition) -> usize {
        self.parts
            .get(tp)
            .map_or(0, |s| s.pending.iter().filter(|e| !e.done).count())
    }

    /// Records in flight across all partitions.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Value bytes in flight across all partitions.
    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }
}

#[cfg(test)]
mod tests;

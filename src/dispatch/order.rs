//! Per-key order (`output.ordering = "key"`): the outputs of records with
//! the same key from the same input partition are handed to the producer
//! in input order, although jobs finish in any order. A record enters its
//! key's queue when the dispatcher takes it; its output waits there until
//! every earlier record of that key has been published or dead-lettered.
//! The idempotent producer keeps that order on the output partition (the
//! output key is the input key, so a key has one output partition).
//!
//! Memory: a held output's input record is not finished, so it counts
//! against the source's in-flight budget like any record still waiting for
//! its job; the queues hold one small entry per such record.

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::model::{SourcePos, TopicPartition};

/// A record's place in its key's queue.
struct Entry<T> {
    offset: i64,
    state: State<T>,
}

enum State<T> {
    /// Its output is not known yet.
    Waiting,
    /// Its output, held until the records before it are out.
    Ready(T),
    /// It was dead-lettered (nothing goes to the output topic).
    Done,
}

/// The queues of the keys that have records in flight.
pub(crate) struct KeyOrder<T> {
    queues: FxHashMap<(TopicPartition, u64, Bytes), VecDeque<Entry<T>>>,
    held: usize,
}

impl<T> Default for KeyOrder<T> {
    fn default() -> Self {
        Self {
            queues: FxHashMap::default(),
            held: 0,
        }
    }
}

impl<T> KeyOrder<T> {
    /// The record at `pos` was taken (records of a partition arrive in
    /// offset order). A record without a key has no order to keep.
    pub(crate) fn enter(&mut self, pos: &SourcePos, key: Option<&Bytes>) {
        let Some(key) = key else { return };
        let q = self
            .queues
            .entry(((pos.topic.clone(), pos.partition), pos.epoch, key.clone()))
            .or_default();
        // A partition read again from an earlier offset without a revoke
        // in between (not expected): the stale entries would never end.
        while q.back().is_some_and(|e| e.offset >= pos.offset) {
            if let Some(Entry {
                state: State::Ready(_), ..
            }) = q.pop_back()
            {
                self.held -= 1;
            }
        }
        q.push_back(Entry {
            offset: pos.offset,
            state: State::Waiting,
        });
    }

    /// The record at `pos` has its output `out` (`None`: it was
    /// dead-lettered). Returns the outputs to publish now, in order: none
    /// while an earlier record of its key waits, else its own and those
    /// after it that were held for it.
    pub(crate) fn ready(&mut self, pos: &SourcePos, key: Option<&Bytes>, out: Option<T>) -> Vec<T> {
        let Some(key) = key else {
            return out.into_iter().collect();
        };
        let k = ((pos.topic.clone(), pos.partition), pos.epoch, key.clone());
        let Some(q) = self.queues.get_mut(&k) else {
            return out.into_iter().collect();
        };
        let Ok(i) = q.binary_search_by_key(&pos.offset, |e| e.offset) else {
            // Not queued (already out, e.g. an output refused by the
            // broker and dead-lettered afterwards).
            return out.into_iter().collect();
        };
        if i > 0 {
            if out.is_some() {
                self.held += 1;
            }
            q[i].state = out.map_or(State::Done, State::Ready);
            return Vec::new();
        }
        q.pop_front();
        let mut now: Vec<T> = out.into_iter().collect();
        while q.front().is_some_and(|e| !matches!(e.state, State::Waiting)) {
            if let Some(Entry {
                state: State::Ready(t), ..
            }) = q.pop_front()
            {
                self.held -= 1;
                now.push(t);
            }
        }
        if q.is_empty() {
            self.queues.remove(&k);
        }
        now
    }

    /// Keeps the queues of the partition assignments `live` says are
    /// current (by partition and epoch); the others' held outputs were
    /// never published nor committed: the next owner reads them again.
    pub(crate) fn retain(&mut self, live: impl Fn(&TopicPartition, u64) -> bool) {
        let mut dropped = 0;
        self.queues.retain(|(tp, epoch, _), q| {
            let keep = live(tp, *epoch);
            if !keep {
                dropped += q.iter().filter(|e| matches!(e.state, State::Ready(_))).count();
            }
            keep
        });
        self.held -= dropped;
    }

    /// Outputs held back for an earlier record of their key.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Keys with records in flight.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.queues.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pos(partition: i32, offset: i64) -> SourcePos {
        SourcePos {
            topic: Arc::from("in"),
            partition,
            offset,
            epoch: 1,
        }
    }

    fn key(k: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(k.as_bytes()))
    }

    #[test]
    fn a_later_output_waits_for_the_earlier_record_of_its_key_then_both_go_in_order() {
        let mut o = KeyOrder::default();
        for (off, k) in [(1, "a"), (2, "b"), (3, "a"), (4, "a")] {
            o.enter(&pos(0, off), key(k).as_ref());
        }
        assert_eq!(o.ready(&pos(0, 4), key("a").as_ref(), Some(4)), Vec::<i64>::new());
        assert_eq!(
            o.ready(&pos(0, 2), key("b").as_ref(), Some(2)),
            vec![2],
            "another key is not held"
        );
        assert_eq!(o.ready(&pos(0, 3), key("a").as_ref(), Some(3)), Vec::<i64>::new());
        assert_eq!(o.held(), 2);
        assert_eq!(o.ready(&pos(0, 1), key("a").as_ref(), Some(1)), vec![1, 3, 4]);
        assert_eq!((o.held(), o.keys()), (0, 0), "finished keys leave memory");
    }

    #[test]
    fn a_dead_letter_unblocks_the_outputs_after_it_and_emits_nothing_itself() {
        let mut o = KeyOrder::default();
        for off in 1..=3 {
            o.enter(&pos(0, off), key("a").as_ref());
        }
        assert!(o.ready(&pos(0, 3), key("a").as_ref(), Some(3)).is_empty());
        assert!(o.ready(&pos(0, 2), key("a").as_ref(), None).is_empty());
        assert_eq!(o.ready(&pos(0, 1), key("a").as_ref(), Some(1)), vec![1, 3]);
        assert_eq!(o.keys(), 0);
    }

    #[test]
    fn records_without_a_key_or_unknown_to_the_queues_go_at_once() {
        let mut o = KeyOrder::default();
        o.enter(&pos(0, 1), None);
        assert_eq!(o.ready(&pos(0, 1), None, Some(1)), vec![1]);
        o.enter(&pos(0, 2), key("a").as_ref());
        assert_eq!(o.ready(&pos(0, 9), key("a").as_ref(), Some(9)), vec![9]);
        assert_eq!(
            o.ready(&pos(1, 2), key("a").as_ref(), Some(2)),
            vec![2],
            "same key, other partition"
        );
        assert_eq!(o.keys(), 1);
    }

    #[test]
    fn a_revoked_partition_drops_its_queues_and_held_outputs() {
        let mut o = KeyOrder::default();
        for (p, off) in [(0, 1), (0, 2), (1, 1), (1, 2)] {
            o.enter(&pos(p, off), key("a").as_ref());
        }
        assert!(o.ready(&pos(0, 2), key("a").as_ref(), Some(2)).is_empty());
        assert!(o.ready(&pos(1, 2), key("a").as_ref(), Some(2)).is_empty());
        o.retain(|tp, epoch| tp.1 == 1 && epoch == 1);
        assert_eq!((o.held(), o.keys()), (1, 1));
        assert_eq!(o.ready(&pos(1, 1), key("a").as_ref(), Some(1)), vec![1, 2]);
    }

    #[test]
    fn a_partition_read_again_from_an_earlier_offset_replaces_the_stale_entries() {
        let mut o = KeyOrder::default();
        o.enter(&pos(0, 5), key("a").as_ref());
        o.enter(&pos(0, 6), key("a").as_ref());
        assert!(o.ready(&pos(0, 6), key("a").as_ref(), Some(6)).is_empty());
        o.enter(&pos(0, 5), key("a").as_ref());
        assert_eq!(o.held(), 0);
        assert_eq!(o.ready(&pos(0, 5), key("a").as_ref(), Some(5)), vec![5]);
        assert_eq!(o.keys(), 0);
    }
}

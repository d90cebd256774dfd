//! Unit tests of the offset tracker.

use std::sync::Arc;

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
        assert!(t.track(&pos(o, e), 1, 0));
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
        t.track(&pos(o, e), 5, 0);
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
    t.track(&pos(0, e1), 10, 0);
    t.track(&pos(1, e1), 10, 0);
    assert_eq!(t.in_flight(), 2);
    t.revoke(&tp());
    assert_eq!(t.in_flight(), 0);
    assert_eq!(t.in_flight_bytes(), 0);
    let e2 = t.assign(tp());
    assert_ne!(e1, e2);
    assert!(!t.complete(&pos(0, e1)));
    assert!(!t.track(&pos(5, e1), 1, 0));
    assert!(t.track(&pos(0, e2), 1, 0));
    assert!(!t.is_live(&pos(0, e1)));
    assert!(t.is_live(&pos(0, e2)));
}

#[test]
fn double_completion_and_unknown_offsets_are_rejected() {
    let mut t = OffsetTracker::new();
    let e = t.assign(tp());
    t.track(&pos(0, e), 1, 0);
    t.track(&pos(1, e), 1, 0);
    assert!(t.complete(&pos(1, e)));
    assert!(!t.complete(&pos(1, e)));
    assert!(!t.complete(&pos(9, e)));
    assert_eq!(t.in_flight(), 1);
}

#[test]
fn commit_candidates_only_when_moved() {
    let mut t = OffsetTracker::new();
    let e = t.assign(tp());
    t.track(&pos(0, e), 1, 0);
    t.complete(&pos(0, e));
    let c = t.commit_candidates();
    assert_eq!(c.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![1]);
    t.mark_committed(&c[0]);
    assert!(t.commit_candidates().is_empty());
    t.track(&pos(1, e), 1, 0);
    assert!(t.commit_candidates().is_empty());
    t.complete(&pos(1, e));
    assert_eq!(offsets(&mut t), vec![2]);
}

#[test]
fn the_starting_position_is_not_committed_again() {
    let mut t = OffsetTracker::new();
    let e = t.assign(tp());
    t.track(&pos(40, e), 1, 0);
    assert!(t.commit_candidates().is_empty(), "no progress yet");
    t.complete(&pos(40, e));
    assert_eq!(offsets(&mut t), vec![41]);
}

#[test]
fn backwards_offsets_are_not_tracked() {
    let mut t = OffsetTracker::new();
    let e = t.assign(tp());
    assert!(t.track(&pos(5, e), 1, 0));
    assert!(!t.track(&pos(4, e), 1, 0));
    assert!(!t.track(&pos(5, e), 1, 0));
}

#[test]
fn the_oldest_uncommitted_record_is_the_one_at_the_commit_point_until_committed() {
    let mut t = OffsetTracker::new();
    let e = t.assign(tp());
    let oldest = |t: &OffsetTracker| t.oldest_uncommitted()[0].1;
    assert_eq!(oldest(&t), None, "nothing consumed");
    for (o, ts) in [(0, 1_000), (1, 900), (2, 3_000)] {
        t.track(&pos(o, e), 1, ts);
    }
    assert_eq!(oldest(&t), Some(1_000), "the first record, not the earliest timestamp");
    t.complete(&pos(1, e));
    assert_eq!(oldest(&t), Some(1_000));
    t.complete(&pos(0, e));
    assert_eq!(oldest(&t), Some(1_000), "finished, not yet committed");
    let c = t.commit_candidates();
    assert_eq!(c[0].offset, 2);
    // Record 2 finishes after the commit point was taken.
    t.complete(&pos(2, e));
    t.mark_committed(&c[0]);
    assert_eq!(oldest(&t), Some(3_000), "record 2 waits for the next commit");
    t.track(&pos(3, e), 1, 5_000);
    assert_eq!(oldest(&t), Some(3_000));
    let c = t.commit_candidates();
    assert_eq!(c[0].offset, 3);
    t.mark_committed(&c[0]);
    assert_eq!(oldest(&t), Some(5_000), "record 3 is still in flight");
    t.complete(&pos(3, e));
    let c = t.commit_candidates();
    t.mark_committed(&c[0]);
    assert_eq!(oldest(&t), None, "everything consumed is committed");
}

#[test]
fn revocations_count_partitions_actually_given_up() {
    let mut t = OffsetTracker::new();
    assert_eq!(t.revocations(), 0);
    t.revoke(&tp());
    assert_eq!(t.revocations(), 0, "not assigned: nothing given up");
    t.assign(tp());
    t.revoke(&tp());
    assert_eq!(t.revocations(), 1, "a job that waited across this must not submit");
    t.assign(tp());
    assert_eq!(t.revocations(), 1, "a new assignment revokes nothing");
}

//! The split of the key's slots and the team, pure.

use super::*;

fn busy(partitions: u32, active: u32) -> Status {
    Status {
        partitions,
        demand: true,
        active,
        backlog: 0,
    }
}

fn idle(active: u32) -> Status {
    Status {
        partitions: 2,
        demand: false,
        active,
        backlog: 0,
    }
}

#[test]
fn shares_follow_partitions_and_add_up_to_the_slots() {
    let team = [("a", busy(2, 0)), ("b", busy(2, 0)), ("c", busy(2, 0))];
    let shares: Vec<usize> = ["a", "b", "c"].iter().map(|m| slot_share(5, m, &team).1).collect();
    assert_eq!(shares, [2, 2, 1], "the remainder goes to the smaller ids");
    assert_eq!(slot_share(5, "a", &team).0, 1, "the whole part");
    let team = [("a", busy(1, 0)), ("b", busy(3, 0))];
    assert_eq!(slot_share(5, "a", &team).1, 1);
    assert_eq!(slot_share(5, "b", &team).1, 4);
    for n in 1..12u32 {
        let ids: Vec<String> = (0..n).map(|i| format!("p{i:02}")).collect();
        let team: Vec<(&str, Status)> = ids
            .iter()
            .zip(0..)
            .map(|(id, i)| (id.as_str(), busy(1 + i % 3, 0)))
            .collect();
        let sum: usize = team.iter().map(|(id, _)| slot_share(5, id, &team).1).sum();
        assert_eq!(sum, 5, "{n} members");
    }
}

#[test]
fn the_remainder_goes_to_the_member_that_fell_behind() {
    let behind = Status {
        backlog: 9,
        ..busy(2, 0)
    };
    let team = [("a", busy(2, 0)), ("b", busy(2, 0)), ("c", behind)];
    let shares: Vec<usize> = ["a", "b", "c"].iter().map(|m| slot_share(5, m, &team).1).collect();
    assert_eq!(shares, [2, 1, 2], "c has more batches waiting than b");
}

#[test]
fn members_without_work_lend_what_they_do_not_hold() {
    let team = [("a", idle(0)), ("b", busy(3, 0)), ("c", idle(2))];
    assert_eq!(slot_share(5, "b", &team).1, 3, "c still holds two");
    assert_eq!(slot_share(5, "a", &team).1, 0);
    assert_eq!(slot_share(5, "a", &[("a", idle(0)), ("b", idle(1))]).1, 5);
}

#[test]
fn a_team_counts_live_peers_and_itself() {
    let t = Team::new("b".into(), 6);
    let now = Instant::now();
    assert_eq!(t.room(5, now).free, 5, "alone, nothing assigned yet");
    t.set_partitions(2);
    t.set_demand(true);
    assert_eq!(
        t.room(5, now).free,
        1,
        "four partitions unseen: the whole part of the quota"
    );
    t.heard("a", Some(busy(2, 0)), now);
    t.heard("c", Some(busy(2, 0)), now);
    t.heard("b", Some(busy(2, 5)), now);
    assert_eq!(t.room(5, now).free, 2);
    t.set_active(1);
    assert_eq!(t.room(5, now).free, 1);
    t.heard("a", None, now);
    assert_eq!(
        t.room(5, now + EXPIRY / 2).free,
        0,
        "a left: its partitions are unseen, b keeps to the whole part"
    );
    t.heard("c", Some(busy(4, 0)), now);
    assert_eq!(t.room(5, now).free, 1, "b: 2 of 5 by partitions, one held");
    t.set_active(0);
    assert_eq!(t.room(5, now + EXPIRY).free, 1, "c expired: its partitions are unseen");
    t.set_active(1);
    t.heard("c", Some(idle(4)), now + EXPIRY);
    assert_eq!(t.room(5, now + EXPIRY).free, 0, "c holds four, b one: the key is full");
}

#[test]
fn silence_is_measured_from_the_last_record_read_and_leases_from_acknowledged_heartbeats() {
    let t = Team::new("me".into(), 6);
    let now = Instant::now();
    assert_eq!(t.silent_for("me", now + CLAIM_AFTER), Duration::ZERO);
    assert!(
        t.silent_for("never-heard", now + CLAIM_AFTER) >= CLAIM_AFTER,
        "silent since this pod started"
    );
    t.heard("a", Some(busy(1, 0)), now);
    assert_eq!(t.silent_for("a", now + Duration::from_secs(3)), Duration::from_secs(3));
    t.heard("a", None, now);
    assert_eq!(
        t.silent_for("a", now),
        Duration::MAX,
        "left: its jobs may be taken at once"
    );
    assert!(!t.lease_ok(now), "no heartbeat acknowledged yet");
    t.renew_lease(now);
    assert!(t.lease_ok(now + LEASE / 2));
    assert!(!t.lease_ok(now + LEASE));
    t.renew_lease(now - Duration::from_secs(1));
    assert!(
        t.lease_ok(now + LEASE / 2),
        "an older acknowledgement does not shorten it"
    );
    assert!(CLAIM_AFTER > LEASE);
}

#[test]
fn work_that_waited_borrows_the_slots_of_pods_without_work() {
    let t = Team::new("b".into(), 6);
    let now = Instant::now();
    t.set_partitions(2);
    let c_idle = Status {
        partitions: 4,
        demand: false,
        active: 0,
        backlog: 0,
    };
    t.heard("c", Some(c_idle), now);
    t.set_demand(true);
    // Work on c may have started at the same moment: b keeps to its
    // share by partitions until c has had time to say so.
    assert_eq!(t.room(5, now).share, 2);
    let later = Instant::now() + BORROW_AFTER;
    assert!(
        t.next_change(now).is_some_and(|c| c > now && c <= later),
        "the dispatcher looks again then"
    );
    assert_eq!(
        t.room(5, later).share,
        5,
        "c still has nothing to do: b borrows its slots"
    );
    t.heard("c", Some(busy(4, 0)), later);
    assert_eq!(t.room(5, later).share, 2, "c has work: back to the split by partitions");
}

#[test]
fn the_peers_jobs_at_a_moment_come_from_their_records_written_by_then() {
    let t = Team::new("b".into(), 6);
    let now = Instant::now();
    t.heard("a", Some(busy(1, 3)), now);
    t.heard("c", Some(busy(1, 1)), now);
    for (member, at_ms, active) in [("a", 1_000, 1), ("a", 2_000, 3), ("c", 1_500, 1), ("b", 1_000, 5)] {
        t.heard_at(member, at_ms, active);
    }
    assert_eq!(
        t.peers_active_at(1_999, now),
        2,
        "a's later record is not of that moment; b is this pod"
    );
    assert_eq!(t.peers_active_at(2_000, now), 4);
    assert_eq!(t.peers_active_at(500, now), 2, "before every record: the oldest kept");
    t.heard_at("a", 1_200, 0);
    assert_eq!(
        t.peers_active_at(1_300, now),
        2,
        "a record older than the last is ignored"
    );
    t.heard("a", None, now);
    assert_eq!(t.peers_active_at(2_000, now), 1, "a left");
    assert_eq!(t.peers_active_at(2_000, now + EXPIRY), 0, "c went silent");
}

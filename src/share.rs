//! Sharing the key's active-job slots among the pods that use it.
//!
//! Every pod publishes a member record in the store topic (`m/<member>`:
//! how many input partitions it owns and whether it has identifiers
//! waiting for a job), about once a second and at once when that changes;
//! every pod tails the topic, so every pod sees the same team. Each pod's
//! share of the key's slots is then the same pure function of the team
//! ([`slot_share`], largest remainder), computed alike everywhere: pods
//! split the slots by their partitions, a pod whose work has waited a
//! moment borrows the slots of pods without work, and nobody needs a
//! coordinator. A member not heard of for
//! [`EXPIRY`] is gone (a crash; a clean stop says so at once). The API's
//! 429 and its `x-ratelimit-*` headers stay the safety net for what a
//! share cannot see (another group or user on the same key, a share in
//! transition).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A member not heard of for this long has left.
pub(crate) const EXPIRY: Duration = Duration::from_secs(5);
/// How long after sending its last acknowledged heartbeat a pod may still
/// start a submit for a job it owns: no peer takes its jobs over before
/// it has been silent for [`CLAIM_AFTER`], which is longer.
pub(crate) const LEASE: Duration = EXPIRY;
/// How long a job's owner must have been silent (no member record read)
/// before another pod may claim the job: beyond the owner's lease, with a
/// margin for the time a record takes from one pod to another.
pub(crate) const CLAIM_AFTER: Duration = Duration::from_secs(10);
/// How often a member says it is still there.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a pod's work waits before it borrows the slots of pods without
/// work: long enough for work that started on them at the same moment to
/// be heard of (a member record is written within 50 ms of a change and
/// read by every pod within a few hundred).
pub(crate) const BORROW_AFTER: Duration = Duration::from_millis(500);

/// `me`'s share of the key's `slots` among `team` (member id, status).
///
/// Slots held by members without work stay theirs until their jobs end;
/// the rest is split among the members with work by their partitions:
/// each gets the whole part of its quota, and the slots left go to the
/// largest remainders (ties to the smaller id), so the shares add up
/// exactly and every pod computes the same split; of equal remainders,
/// the member with the larger backlog goes first (so the pod that fell
/// behind catches up). With no work anywhere,
/// `me` may take every slot. Returns (whole part, with the remainder).
pub(crate) fn slot_share(slots: usize, me: &str, team: &[(&str, Status)]) -> (usize, usize) {
    let reserved: u64 = team
        .iter()
        .filter(|(_, s)| !s.demand)
        .map(|(_, s)| u64::from(s.active))
        .sum();
    let total: u64 = team.iter().map(|(_, s)| u64::from(s.weight())).sum();
    if total == 0 {
        return (slots, slots);
    }
    let free = (slots as u64).saturating_sub(reserved);
    let mut parts: Vec<(&str, u64, u64, u64)> = team
        .iter()
        .map(|(id, s)| {
            let q = free * u64::from(s.weight());
            (*id, q / total, q / total, q % total)
        })
        .collect();
    let left = free - parts.iter().map(|p| p.1).sum::<u64>();
    let mut order: Vec<usize> = (0..parts.len()).filter(|i| team[*i].1.demand).collect();
    order.sort_by(|a, b| {
        parts[*b]
            .3
            .cmp(&parts[*a].3)
            .then(team[*b].1.backlog.cmp(&team[*a].1.backlog))
            .then(parts[*a].0.cmp(parts[*b].0))
    });
    for i in order.into_iter().take(left as usize) {
        parts[i].2 += 1;
    }
    parts
        .iter()
        .find(|p| p.0 == me)
        .map_or((0, 0), |p| (p.1 as usize, p.2 as usize))
}

/// What a member says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Status {
    /// Input partitions it owns.
    pub(crate) partitions: u32,
    /// Whether identifiers wait for a job.
    pub(crate) demand: bool,
    /// The key's slots its jobs hold.
    pub(crate) active: u32,
    /// Batches waiting for a slot, in fours.
    pub(crate) backlog: u32,
}

impl Status {
    /// Its weight in the split.
    pub(crate) fn weight(self) -> u32 {
        if self.demand {
            self.partitions.max(1)
        } else {
            0
        }
    }
}

/// The id of the partitions no member has claimed yet (peers not heard of):
/// counted as a member with work, last in every tie.
const UNSEEN: &str = "\u{10FFFF}";

/// What [`Team::room`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// How many more jobs this pod may start now.
    pub(crate) free: usize,
    /// This pod's share of the key's slots.
    pub(crate) share: usize,
    /// The members heard of, this pod included.
    pub(crate) members: usize,
}

/// The team as this pod sees it.
pub(crate) struct Team {
    me: String,
    /// The input topics' partitions in all.
    total_partitions: u32,
    partitions: AtomicU32,
    demand: AtomicBool,
    /// Since when work has been waiting.
    demand_since: Mutex<Option<Instant>>,
    active: AtomicU32,
    backlog: AtomicU32,
    peers: Mutex<HashMap<String, (Status, Instant)>>,
    /// Each peer's recent records: (written at, ms by its clock; its
    /// jobs), oldest first.
    history: Mutex<HashMap<String, VecDeque<(i64, u32)>>>,
    /// When each member was last heard of (`None`: it left), expired ones too.
    last_heard: Mutex<HashMap<String, Option<Instant>>>,
    /// When this pod started listening.
    started: Instant,
    /// When this pod's last acknowledged heartbeat was sent.
    lease_from: Mutex<Option<Instant>>,
    /// Fires when this pod's own status changes (for its heartbeat).
    pub(crate) own_changed: Notify,
    /// Fires when a peer appears, changes or leaves (for the dispatcher).
    pub(crate) peers_changed: Notify,
}

impl Team {
    /// The team of member `me`, alone so far, on input topics of
    /// `total_partitions` partitions.
    pub(crate) fn new(me: String, total_partitions: u32) -> Self {
        Self {
            me,
            total_partitions,
            partitions: AtomicU32::new(0),
            demand: AtomicBool::new(false),
            demand_since: Mutex::new(None),
            active: AtomicU32::new(0),
            backlog: AtomicU32::new(0),
            peers: Mutex::default(),
            history: Mutex::default(),
            last_heard: Mutex::default(),
            started: Instant::now(),
            lease_from: Mutex::default(),
            own_changed: Notify::new(),
            peers_changed: Notify::new(),
        }
    }

    /// This pod's member id.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// What this pod says of itself now.
    pub(crate) fn own(&self) -> Status {
        Status {
            partitions: self.partitions.load(Ordering::Relaxed),
            demand: self.demand.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            backlog: self.backlog.load(Ordering::Relaxed),
        }
    }

    fn set(&self, cell: &AtomicU32, n: u32) {
        if cell.swap(n, Ordering::Relaxed) != n {
            self.own_changed.notify_one();
        }
    }

    /// The source's assignment changed.
    pub(crate) fn set_partitions(&self, n: u32) {
        self.set(&self.partitions, n);
    }

    /// The slots this pod's jobs hold.
    pub(crate) fn set_active(&self, n: usize) {
        self.set(&self.active, n as u32);
    }

    /// Batches waiting for a slot, in fours (the dispatcher, each turn).
    pub(crate) fn set_backlog(&self, batches: usize) {
        self.set(&self.backlog, batches.min(u32::MAX as usize) as u32);
    }

    /// Whether identifiers wait for a job (the dispatcher, each turn).
    pub(crate) fn set_demand(&self, demand: bool) {
        if self.demand.swap(demand, Ordering::Relaxed) != demand {
            *self.demand_since.lock().expect("team") = demand.then(Instant::now);
            self.own_changed.notify_one();
        }
    }

    /// A member record was read: `status` of `member`, or `None` when it
    /// left. This pod's own records are ignored.
    pub(crate) fn heard(&self, member: &str, status: Option<Status>, now: Instant) {
        if member == self.me {
            return;
        }
        self.last_heard
            .lock()
            .expect("team")
            .insert(member.to_string(), status.map(|_| now));
        let mut peers = self.peers.lock().expect("team");
        let changed = match status {
            Some(s) => peers
                .insert(member.to_string(), (s, now))
                .is_none_or(|(old, _)| old != s),
            None => peers.remove(member).is_some(),
        };
        if status.is_none() {
            self.history.lock().expect("team").remove(member);
        }
        if changed {
            self.peers_changed.notify_one();
        }
    }

    /// `member`'s record written at `at_ms` (its clock) said its jobs
    /// held `active` slots: kept a few seconds, for [`Self::peers_active_at`].
    pub(crate) fn heard_at(&self, member: &str, at_ms: i64, active: u32) {
        if member == self.me {
            return;
        }
        let mut history = self.history.lock().expect("team");
        let q = history.entry(member.to_string()).or_default();
        if q.back().is_some_and(|(t, _)| *t > at_ms) {
            return;
        }
        q.push_back((at_ms, active));
        let kept = EXPIRY.as_millis() as i64;
        while q.len() > 64 || (q.len() > 1 && q.front().is_some_and(|(t, _)| at_ms - *t > kept)) {
            q.pop_front();
        }
    }

    /// The slots the live peers' jobs held at `at_ms`, by each one's last
    /// record written by then (its oldest kept, when all are later).
    pub(crate) fn peers_active_at(&self, at_ms: i64, now: Instant) -> usize {
        let peers = self.peers.lock().expect("team");
        let history = self.history.lock().expect("team");
        peers
            .iter()
            .filter(|(_, (_, seen))| now.saturating_duration_since(*seen) < EXPIRY)
            .map(|(member, (s, _))| {
                let q = history.get(member);
                let then = q.and_then(|q| q.iter().rev().find(|(t, _)| *t <= at_ms).or(q.front()));
                then.map_or(s.active, |(_, active)| *active) as usize
            })
            .sum()
    }

    /// Slots the live peers say their jobs hold.
    pub(crate) fn peers_active(&self, now: Instant) -> usize {
        self.peers
            .lock()
            .expect("team")
            .values()
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < EXPIRY)
            .map(|(s, _)| s.active as usize)
            .sum()
    }

    /// How long `member` has been silent at `now`: since its last member
    /// record was read (since this pod started, when none was read live);
    /// forever once it left (its record removed). Never for this pod.
    pub(crate) fn silent_for(&self, member: &str, now: Instant) -> Duration {
        if member == self.me {
            return Duration::ZERO;
        }
        match self.last_heard.lock().expect("team").get(member) {
            Some(Some(at)) => now.saturating_duration_since(*at),
            Some(None) => Duration::MAX,
            None => now.saturating_duration_since(self.started),
        }
    }

    /// A heartbeat sent at `sent` was acknowledged by Kafka.
    pub(crate) fn renew_lease(&self, sent: Instant) {
        let mut l = self.lease_from.lock().expect("team");
        if l.is_none_or(|t| sent > t) {
            *l = Some(sent);
        }
    }

    /// Whether this pod may start a submit for a job it owns at `now`: its
    /// last acknowledged heartbeat was sent less than [`LEASE`] ago.
    pub(crate) fn lease_ok(&self, now: Instant) -> bool {
        self.lease_from
            .lock()
            .expect("team")
            .is_some_and(|t| now.saturating_duration_since(t) < LEASE)
    }

    /// How many more jobs this pod may start at `now`, of the key's
    /// `slots`: what its share leaves, and what the whole team leaves of
    /// the key (a share in transition: another pod may still hold more
    /// than its new share).
    ///
    /// The share is the split by partitions among every member that has
    /// any (what no two pods can both exceed, whenever their work starts);
    /// a pod whose work has waited [`BORROW_AFTER`] (long enough for its
    /// peers' work to be heard of) may also borrow the slots of members
    /// without work. While the group has partitions no heard-of member
    /// owns (peers starting at the same moment), the share is the whole
    /// part of the quota, at least one.
    pub(crate) fn room(&self, slots: usize, now: Instant) -> Room {
        let mut peers = self.peers.lock().expect("team");
        peers.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < EXPIRY);
        let own = self.own();
        let mut team: Vec<(&str, Status)> = peers.iter().map(|(id, (s, _))| (id.as_str(), *s)).collect();
        // A pod counts its own status in before its peers have heard it.
        team.push((&self.me, own));
        let claimed: u32 = team.iter().map(|(_, s)| s.partitions).sum();
        let unseen = self.total_partitions.saturating_sub(claimed);
        let phantom = unseen > 0 && (own.partitions > 0 || !peers.is_empty());
        if phantom {
            let unclaimed = Status {
                partitions: unseen,
                demand: true,
                active: 0,
                backlog: 0,
            };
            team.push((UNSEEN, unclaimed));
        }
        let everyone: Vec<(&str, Status)> = team
            .iter()
            .map(|(id, s)| {
                let busy = Status {
                    partitions: s.partitions,
                    demand: s.partitions > 0,
                    active: 0,
                    backlog: s.backlog,
                };
                (*id, busy)
            })
            .collect();
        let (whole, with_rest) = slot_share(slots, &self.me, &everyone);
        let mut share = if phantom { whole.max(1) } else { with_rest };
        let waited = self
            .demand_since
            .lock()
            .expect("team")
            .is_some_and(|t| now.saturating_duration_since(t) >= BORROW_AFTER);
        if waited && !phantom {
            share = share.max(slot_share(slots, &self.me, &team).1);
        }
        let held: usize = team.iter().map(|(_, s)| s.active as usize).sum();
        Room {
            free: share
                .saturating_sub(own.active as usize)
                .min(slots.saturating_sub(held)),
            share,
            members: peers.len() + 1,
        }
    }

    /// When the room may change without a peer's record: a peer expires,
    /// or this pod's work has waited long enough to borrow.
    pub(crate) fn next_change(&self, now: Instant) -> Option<Instant> {
        let peers = self.peers.lock().expect("team");
        let expiry = peers.values().map(|(_, seen)| *seen + EXPIRY).min();
        let borrow = self
            .demand_since
            .lock()
            .expect("team")
            .map(|t| t + BORROW_AFTER)
            .filter(|t| *t > now);
        expiry.into_iter().chain(borrow).min()
    }
}

#[cfg(test)]
mod tests;

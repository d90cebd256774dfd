//! The ledger: every reservation of the key's budget, in the order of the
//! one store-topic partition that carries them, and the credits each
//! window holds. Pure; every pod applies the same records in the same
//! order and so reaches the same verdict on each reservation.
//!
//! A reservation of `n` credits (one job submission of `n` identifiers)
//! is valid if, with it, every window it names stays within the ceiling
//! it states; only valid ones count. A settlement replaces a valid
//! reservation's `n` by what the job really cost (its matches). A
//! reservation that is already in the ledger is never evaluated again (a
//! later copy would, after compaction, stand at another offset).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The format version of budget records.
const VERSION: u8 = 1;

/// Which window a ceiling is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Span {
    /// The UTC hour (or `budget.hour_length`).
    Hour,
    /// The UTC day (or `budget.day_length`).
    Day,
}

impl Span {
    /// A bounded label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// One window a reservation counts in, with the ceiling its writer had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// Hour or day.
    pub(crate) span: Span,
    /// When the window starts, ms since the epoch (its id).
    pub(crate) start_ms: i64,
    /// When it ends.
    pub(crate) end_ms: i64,
    /// The ceiling of the window.
    pub(crate) limit: u64,
}

/// A reservation as written to the topic, and kept in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Format version.
    pub(crate) v: u8,
    /// The member that reserved.
    pub(crate) owner: String,
    /// Credits reserved: the job's identifiers.
    pub(crate) n: u64,
    /// The windows it counts in.
    pub(crate) slots: Vec<Slot>,
    /// When it was written (ms since the epoch, the writer's clock).
    #[serde(default)]
    pub(crate) at_ms: i64,
    /// What the job cost, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cost: Option<u64>,
}

impl Entry {
    /// A reservation of `n` credits by `owner` in `slots`.
    pub(crate) fn new(owner: &str, n: u64, slots: Vec<Slot>, at_ms: i64) -> Self {
        Self {
            v: VERSION,
            owner: owner.to_string(),
            n,
            slots,
            at_ms,
            cost: None,
        }
    }

    /// What it counts for now: its cost once settled, else all of `n`.
    pub(crate) fn charge(&self) -> u64 {
        self.cost.unwrap_or(self.n)
    }

    /// The value written and stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a budget entry serializes")
    }

    /// Reads a value; `None` for one this version cannot read.
    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(value).ok().filter(|e| e.v == VERSION)
    }
}

/// A settlement as written to the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settlement {
    v: u8,
    /// What the job cost.
    pub(crate) credits: u64,
}

impl Settlement {
    /// The value of a settlement of `credits`.
    pub(crate) fn encode(credits: u64) -> Vec<u8> {
        serde_json::to_vec(&Self { v: VERSION, credits }).expect("a settlement serializes")
    }

    /// Reads a value.
    pub(crate) fn decode(value: &[u8]) -> Option<u64> {
        serde_json::from_slice::<Self>(value)
            .ok()
            .filter(|s| s.v == VERSION)
            .map(|s| s.credits)
    }
}

/// Room left in the windows of a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// Credits that may still be reserved in every window.
    pub(crate) credits: u64,
    /// The window with the least room.
    pub(crate) tightest: Span,
    /// When that window ends (ms since the epoch).
    pub(crate) reopens_ms: i64,
}

/// The valid reservations, and what each window holds.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    entries: HashMap<String, Entry>,
    /// (span, window start) -> credits counted.
    spent: HashMap<(Span, i64), u64>,
}

impl Ledger {
    fn add(&mut self, e: &Entry) {
        for s in &e.slots {
            let v = self.spent.entry((s.span, s.start_ms)).or_default();
            *v = v.saturating_add(e.charge());
        }
    }

    fn sub(&mut self, e: &Entry) {
        for s in &e.slots {
            if let Some(v) = self.spent.get_mut(&(s.span, s.start_ms)) {
                *v = v.saturating_sub(e.charge());
                if *v == 0 {
                    self.spent.remove(&(s.span, s.start_ms));
                }
            }
        }
    }

    /// Applies reservation `id`, read from the topic: `Some` (the entry
    /// to store) if it is valid and new; `None` if it does not fit or
    /// `id` is in the ledger already.
    pub(crate) fn reserve(&mut self, id: &str, e: Entry) -> Option<Entry> {
        if self.entries.contains_key(id) {
            return None;
        }
        let fits = e
            .slots
            .iter()
            .all(|s| self.spent(s.span, s.start_ms).saturating_add(e.n) <= s.limit);
        if !fits {
            return None;
        }
        self.add(&e);
        self.entries.insert(id.to_string(), e.clone());
        Some(e)
    }

    /// Applies a settlement of `id`: `Some` (the entry to store) if `id` is
    /// a valid reservation not yet settled.
    pub(crate) fn settle(&mut self, id: &str, credits: u64) -> Option<Entry> {
        let e = self.entries.get(id).filter(|e| e.cost.is_none())?.clone();
        self.sub(&e);
        let mut settled = e;
        settled.cost = Some(credits.min(settled.n));
        self.add(&settled);
        self.entries.insert(id.to_string(), settled.clone());
        Some(settled)
    }

    /// Removes `id` (a tombstone); whether it was there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.entries.remove(id) {
            Some(e) => {
                self.sub(&e);
                true
            }
            None => false,
        }
    }

    /// Loads a stored entry (already judged valid).
    pub(crate) fn load(&mut self, id: &str, e: Entry) {
        self.remove(id);
        self.add(&e);
        self.entries.insert(id.to_string(), e);
    }

    /// Whether `id` is a valid reservation.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// The valid reservations whose id starts with `prefix` (one job
    /// submission's tries), not yet settled, latest first.
    pub(crate) fn unsettled(&self, prefix: &str) -> Vec<(String, Entry)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(id, e)| id.starts_with(prefix) && e.cost.is_none())
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        v.sort_by_key(|(id, e)| (std::cmp::Reverse(e.at_ms), id.clone()));
        v
    }

    /// Credits counted in window `start_ms` of `span`.
    pub(crate) fn spent(&self, span: Span, start_ms: i64) -> u64 {
        self.spent.get(&(span, start_ms)).copied().unwrap_or(0)
    }

    /// The room in `slots` (the windows of one moment); `None` without
    /// ceilings.
    pub(crate) fn room(&self, slots: &[Slot]) -> Option<Room> {
        slots
            .iter()
            .map(|s| Room {
                credits: s.limit.saturating_sub(self.spent(s.span, s.start_ms)),
                tightest: s.span,
                reopens_ms: s.end_ms,
            })
            .min_by_key(|r| (r.credits, std::cmp::Reverse(r.reopens_ms)))
    }

    /// Reservations whose every window ended before `before_ms`.
    pub(crate) fn ended(&self, before_ms: i64) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.slots.iter().all(|s| s.end_ms < before_ms))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(start: i64, limit: u64) -> Slot {
        Slot {
            span: Span::Hour,
            start_ms: start,
            end_ms: start + 3_600_000,
            limit,
        }
    }

    fn day(limit: u64) -> Slot {
        Slot {
            span: Span::Day,
            start_ms: 0,
            end_ms: 86_400_000,
            limit,
        }
    }

    #[test]
    fn a_reservation_is_valid_only_if_its_windows_keep_their_ceilings() {
        let mut l = Ledger::default();
        assert!(l
            .reserve("a/1", Entry::new("p1", 300, vec![hour(0, 1000)], 0))
            .is_some());
        assert!(l
            .reserve("b/1", Entry::new("p2", 300, vec![hour(0, 1000)], 0))
            .is_some());
        assert!(l
            .reserve("c/1", Entry::new("p1", 300, vec![hour(0, 1000)], 0))
            .is_some());
        assert!(
            l.reserve("d/1", Entry::new("p2", 300, vec![hour(0, 1000)], 0))
                .is_none(),
            "1,200 > 1,000"
        );
        assert!(!l.holds("d/1"));
        assert!(l
            .reserve("e/1", Entry::new("p2", 100, vec![hour(0, 1000)], 0))
            .is_some());
        assert_eq!(l.spent(Span::Hour, 0), 1000);
        assert!(
            l.reserve("f/1", Entry::new("p1", 1, vec![hour(3_600_000, 1000)], 0))
                .is_some(),
            "the next hour is another window"
        );
        assert_eq!(l.room(&[hour(0, 1000)]).unwrap().credits, 0);
    }

    #[test]
    fn a_settlement_gives_back_what_the_job_did_not_cost_and_counts_once() {
        let mut l = Ledger::default();
        l.reserve("a/1", Entry::new("p1", 300, vec![hour(0, 600), day(5000)], 0));
        l.reserve("b/1", Entry::new("p1", 300, vec![hour(0, 600), day(5000)], 0));
        assert!(l.reserve("c/1", Entry::new("p1", 100, vec![hour(0, 600)], 0)).is_none());
        assert_eq!(l.settle("a/1", 180).unwrap().cost, Some(180));
        assert!(l.settle("a/1", 0).is_none(), "settled once");
        assert!(l.settle("x/1", 0).is_none(), "not a valid reservation");
        assert_eq!(l.spent(Span::Hour, 0), 480);
        assert_eq!(l.spent(Span::Day, 0), 480);
        assert!(l.reserve("c/1", Entry::new("p1", 100, vec![hour(0, 600)], 0)).is_some());
        assert!(l.remove("a/1"));
        assert_eq!(l.spent(Span::Hour, 0), 400);
        assert!(!l.remove("a/1"));
    }

    #[test]
    fn a_reservation_already_held_is_not_judged_again() {
        let mut l = Ledger::default();
        assert!(l
            .reserve("a/1", Entry::new("p1", 900, vec![hour(0, 1000)], 0))
            .is_some());
        assert!(l
            .reserve("a/1", Entry::new("p1", 900, vec![hour(0, 1000)], 0))
            .is_none());
        assert_eq!(l.spent(Span::Hour, 0), 900, "not counted twice");
    }

    #[test]
    fn the_tightest_window_names_when_room_comes_back() {
        let mut l = Ledger::default();
        l.reserve("a/1", Entry::new("p1", 450, vec![hour(0, 1000), day(500)], 0));
        let r = l.room(&[hour(0, 1000), day(500)]).unwrap();
        assert_eq!((r.credits, r.tightest, r.reopens_ms), (50, Span::Day, 86_400_000));
        assert_eq!(l.room(&[]), None);
        assert_eq!(l.ended(3_600_001), Vec::<String>::new(), "its day has not ended");
        assert_eq!(l.ended(86_400_001), vec!["a/1".to_string()]);
    }

    #[test]
    fn a_huge_reservation_does_not_wrap_around() {
        let mut l = Ledger::default();
        assert!(l.reserve("a/1", Entry::new("p1", 10, vec![hour(0, 100)], 0)).is_some());
        assert!(l
            .reserve("b/1", Entry::new("p1", u64::MAX, vec![hour(0, 100)], 0))
            .is_none());
        assert_eq!(l.spent(Span::Hour, 0), 10);
    }

    #[test]
    fn the_tries_of_one_submission_are_listed_latest_first() {
        let mut l = Ledger::default();
        l.reserve("j/1/a", Entry::new("p1", 5, vec![hour(0, 100)], 10));
        l.reserve("j/1/b", Entry::new("p1", 5, vec![hour(0, 100)], 20));
        l.reserve("j/2/c", Entry::new("p1", 5, vec![hour(0, 100)], 30));
        let ids: Vec<String> = l.unsettled("j/1/").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["j/1/b", "j/1/a"]);
        l.settle("j/1/b", 1);
        assert_eq!(l.unsettled("j/1/").len(), 1);
    }

    #[test]
    fn entries_and_settlements_round_trip() {
        let e = Entry::new("p1", 7, vec![hour(0, 10)], 0);
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Settlement::decode(&Settlement::encode(4)), Some(4));
        assert_eq!(Entry::decode(b"{\"v\":9}"), None);
        assert_eq!(Settlement::decode(b"nope"), None);
    }
}

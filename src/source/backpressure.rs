//! Back-pressure decisions (pure, unit-tested): when every partition is
//! paused, when it is resumed, and how many records one poll batch may
//! take. At the in-flight budget (records or bytes) the loop first holds
//! (stops taking records but keeps librdkafka's prefetched queue); only a
//! hold that lasts [`PAUSE_AFTER`] pauses the partitions, because a pause
//! drops the prefetched records and a resume costs a fetch round trip (up
//! to a second of nothing on the cache-hit path, where the budget is
//! reached and freed within milliseconds). Resume below 80 % of both.

use std::time::{Duration, Instant};

/// How long the loop holds before it pauses the partitions.
pub(super) const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The in-flight budget: `kafka.max_in_flight` and `kafka.max_in_flight_bytes`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub(super) records: usize,
    pub(super) bytes: usize,
}

/// What to do with the assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Pause every assigned partition (re-applied while over budget: a
    /// rebalance may hand over new, unpaused partitions).
    Pause,
    /// Resume every assigned partition.
    Resume,
    /// Take no records for now (over budget since less than
    /// [`PAUSE_AFTER`]); the partitions stay resumed.
    Hold,
    /// Leave things as they are.
    Keep,
}

/// The pause state of the consumer loop.
#[derive(Debug, Default)]
pub(super) struct Gate {
    paused: bool,
    /// Since when the loop holds, if it does.
    held_since: Option<Instant>,
    /// The assignment (a count of assign callbacks) last resumed.
    resumed_assignment: u64,
}

impl Gate {
    /// Decides for `in_flight` records of `bytes` bytes against `budget`;
    /// `assignments` counts the assignments received so far, `stopping`
    /// holds everything paused for shutdown. A hold lasts until under the
    /// 80 % mark, and turns into a pause at `now` >= its start +
    /// [`PAUSE_AFTER`].
    ///
    /// A new assignment is resumed once under budget even if the loop last
    /// resumed an empty one: librdkafka keeps the pause of a revoked
    /// partition, and it would never fetch again when assigned back.
    pub(super) fn decide(
        &self,
        in_flight: usize,
        bytes: usize,
        budget: Budget,
        stopping: bool,
        assignments: u64,
        now: Instant,
    ) -> Action {
        let over = in_flight >= budget.records || bytes >= budget.bytes;
        let under = !stopping && in_flight * 5 < budget.records * 4 && bytes / 4 < budget.bytes / 5;
        if stopping || (self.paused && over) {
            Action::Pause
        } else if over || (self.held_since.is_some() && !under) {
            match self.held_since {
                Some(t) if now.saturating_duration_since(t) >= PAUSE_AFTER => Action::Pause,
                _ => Action::Hold,
            }
        } else if under && (self.paused || assignments != self.resumed_assignment) {
            Action::Resume
        } else {
            Action::Keep
        }
    }

    /// The pause was applied.
    pub(super) fn paused(&mut self) {
        self.paused = true;
        self.held_since = None;
    }

    /// The loop holds at `now` (the first call starts the hold).
    pub(super) fn held(&mut self, now: Instant) {
        self.held_since.get_or_insert(now);
    }

    /// The loop takes records again without having paused.
    pub(super) fn released(&mut self) {
        self.held_since = None;
    }

    /// Assignment number `assignments` was resumed.
    pub(super) fn resumed(&mut self, assignments: u64) {
        self.paused = false;
        self.held_since = None;
        self.resumed_assignment = assignments;
    }

    /// Whether the last action applied was a pause.
    pub(super) fn is_paused(&self) -> bool {
        self.paused
    }
}

/// Whether to offer commits now, `since` the last offer: every
/// `interval`, and early (at most every [`EARLY_COMMIT_GAP`]) once half the
/// budget is staged for a transaction (`kafka.exactly_once`: staged records
/// leave only with a commit, so waiting for the interval would cap the
/// throughput at one budget per interval).
pub(super) fn commit_due(since: Duration, interval: Duration, staged: (usize, usize), budget: Budget) -> bool {
    let half_staged = staged.0 * 2 >= budget.records || staged.1 * 2 >= budget.bytes;
    since >= interval || (staged.0 > 0 && half_staged && since >= EARLY_COMMIT_GAP)
}

/// The shortest gap between two early commits.
pub(super) const EARLY_COMMIT_GAP: Duration = Duration::from_millis(20);

/// Records one poll batch may take: the budget's remaining room, at least
/// one, at most 1000 (one hand-over to the dispatcher per batch).
pub(super) fn batch_room(in_flight: usize, budget: Budget) -> usize {
    budget.records.saturating_sub(in_flight).clamp(1, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget {
        records: 100,
        bytes: 1000,
    };

    #[test]
    fn holds_at_the_budget_pauses_after_a_second_and_resumes_below_eighty_percent() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut g = Gate::default();
        g.resumed(1);
        assert_eq!(g.decide(99, 0, B, false, 1, at(0)), Action::Keep);
        assert_eq!(g.decide(100, 0, B, false, 1, at(0)), Action::Hold);
        assert_eq!(g.decide(0, 1000, B, false, 1, at(0)), Action::Hold, "bytes count too");
        g.held(at(0));
        g.held(at(500));
        assert_eq!(
            g.decide(85, 0, B, false, 1, at(999)),
            Action::Hold,
            "hysteresis while held"
        );
        assert_eq!(
            g.decide(100, 0, B, false, 1, at(1000)),
            Action::Pause,
            "held for a second"
        );
        g.paused();
        assert_eq!(
            g.decide(100, 0, B, false, 1, at(1001)),
            Action::Pause,
            "re-applied while over"
        );
        assert_eq!(
            g.decide(85, 0, B, false, 1, at(1002)),
            Action::Keep,
            "hysteresis while paused"
        );
        assert_eq!(g.decide(0, 850, B, false, 1, at(1002)), Action::Keep);
        assert_eq!(g.decide(79, 799, B, false, 1, at(1003)), Action::Resume);
        g.resumed(1);
        assert_eq!(g.decide(79, 0, B, false, 1, at(1004)), Action::Keep, "already resumed");
    }

    #[test]
    fn a_short_hold_ends_without_a_pause() {
        let t0 = Instant::now();
        let mut g = Gate::default();
        g.resumed(1);
        g.held(t0);
        assert_eq!(g.decide(79, 0, B, false, 1, t0), Action::Keep);
        g.released();
        assert_eq!(
            g.decide(100, 0, B, false, 1, t0 + PAUSE_AFTER),
            Action::Hold,
            "a new hold"
        );
        assert!(!g.is_paused());
    }

    #[test]
    fn a_new_assignment_is_resumed_even_if_never_paused() {
        let now = Instant::now();
        let mut g = Gate::default();
        g.resumed(1);
        assert_eq!(g.decide(0, 0, B, false, 2, now), Action::Resume);
        g.resumed(2);
        assert_eq!(g.decide(0, 0, B, false, 2, now), Action::Keep);
        assert!(!g.is_paused());
    }

    #[test]
    fn stopping_keeps_everything_paused() {
        let g = Gate::default();
        assert_eq!(g.decide(0, 0, B, true, 5, Instant::now()), Action::Pause);
    }

    #[test]
    fn commits_come_early_when_half_the_budget_waits_for_a_transaction() {
        let ms = Duration::from_millis;
        let second = Duration::from_secs(1);
        assert!(!commit_due(ms(999), second, (0, 0), B));
        assert!(commit_due(second, second, (0, 0), B), "every interval");
        assert!(!commit_due(ms(100), second, (49, 0), B), "less than half staged");
        assert!(commit_due(ms(100), second, (50, 0), B), "half the records");
        assert!(commit_due(ms(100), second, (1, 500), B), "half the bytes");
        assert!(!commit_due(ms(10), second, (50, 0), B), "not more often than the gap");
    }

    #[test]
    fn a_batch_never_takes_more_than_the_room() {
        assert_eq!(batch_room(0, B), 100);
        assert_eq!(batch_room(95, B), 5);
        assert_eq!(batch_room(100, B), 1, "the budget is exceeded by at most one record");
        let big = Budget {
            records: 20_000,
            bytes: 1,
        };
        assert_eq!(batch_room(0, big), 1000);
    }
}

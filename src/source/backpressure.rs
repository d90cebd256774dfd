//! Back-pressure decisions (pure, unit-tested): when every partition is
//! paused, when it is resumed, and how many records one poll batch may
//! take. Pause at the in-flight budget (records or bytes), resume below
//! 80 % of both.

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
    /// Leave things as they are.
    Keep,
}

/// The pause state of the consumer loop.
#[derive(Debug, Default)]
pub(super) struct Gate {
    paused: bool,
    /// The assignment (a count of assign callbacks) last resumed.
    resumed_assignment: u64,
}

impl Gate {
    /// Decides for `in_flight` records of `bytes` bytes against `budget`;
    /// `assignments` counts the assignments received so far, `stopping`
    /// holds everything paused for shutdown.
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
    ) -> Action {
        let over = stopping || in_flight >= budget.records || bytes >= budget.bytes;
        let under = !stopping && in_flight * 5 < budget.records * 4 && bytes / 4 < budget.bytes / 5;
        if over {
            Action::Pause
        } else if under && (self.paused || assignments != self.resumed_assignment) {
            Action::Resume
        } else {
            Action::Keep
        }
    }

    /// The pause was applied.
    pub(super) fn paused(&mut self) {
        self.paused = true;
    }

    /// Assignment number `assignments` was resumed.
    pub(super) fn resumed(&mut self, assignments: u64) {
        self.paused = false;
        self.resumed_assignment = assignments;
    }

    /// Whether the last action applied was a pause.
    pub(super) fn is_paused(&self) -> bool {
        self.paused
    }
}

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
    fn pauses_at_the_budget_and_resumes_below_eighty_percent() {
        let mut g = Gate::default();
        g.resumed(1);
        assert_eq!(g.decide(99, 0, B, false, 1), Action::Keep);
        assert_eq!(g.decide(100, 0, B, false, 1), Action::Pause);
        assert_eq!(g.decide(0, 1000, B, false, 1), Action::Pause, "bytes count too");
        g.paused();
        assert_eq!(g.decide(85, 0, B, false, 1), Action::Keep, "hysteresis");
        assert_eq!(g.decide(0, 850, B, false, 1), Action::Keep);
        assert_eq!(g.decide(79, 799, B, false, 1), Action::Resume);
        g.resumed(1);
        assert_eq!(g.decide(79, 0, B, false, 1), Action::Keep, "already resumed");
    }

    #[test]
    fn a_new_assignment_is_resumed_even_if_never_paused() {
        let mut g = Gate::default();
        g.resumed(1);
        assert_eq!(g.decide(0, 0, B, false, 2), Action::Resume);
        g.resumed(2);
        assert_eq!(g.decide(0, 0, B, false, 2), Action::Keep);
        assert!(!g.is_paused());
    }

    #[test]
    fn stopping_keeps_everything_paused() {
        let g = Gate::default();
        assert_eq!(g.decide(0, 0, B, true, 5), Action::Pause);
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

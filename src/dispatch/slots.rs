//! Job slots: how many jobs may be active at once. The limit is
//! `api.max_active_jobs`, adapted AIMD-style: a 429 on submit means the key's
//! active-job allowance is shared (other replicas or users), so the limit
//! halves; every job that completes without one grows it back by one.

/// The adaptive job-slot limit.
#[derive(Debug, Clone)]
pub(super) struct SlotLimit {
    max: usize,
    current: usize,
}

impl SlotLimit {
    /// Starts at `max`.
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self { max, current: max }
    }

    /// The limit now.
    pub(super) fn get(&self) -> usize {
        self.current
    }

    /// A submit was refused with 429 while `running` jobs held slots:
    /// multiplicative decrease, never below one.
    pub(super) fn on_rate_limited(&mut self, running: usize) {
        self.current = (running.min(self.current) / 2).max(1);
    }

    /// A job completed without a 429: additive increase up to the maximum.
    pub(super) fn on_success(&mut self) {
        self.current = (self.current + 1).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_429_and_grows_back_by_one() {
        let mut l = SlotLimit::new(5);
        assert_eq!(l.get(), 5);
        l.on_rate_limited(5);
        assert_eq!(l.get(), 2);
        l.on_rate_limited(2);
        assert_eq!(l.get(), 1);
        l.on_rate_limited(1);
        assert_eq!(l.get(), 1, "never below one");
        for want in [2, 3, 4, 5, 5] {
            l.on_success();
            assert_eq!(l.get(), want);
        }
    }

    #[test]
    fn decrease_is_relative_to_what_actually_runs() {
        let mut l = SlotLimit::new(5);
        l.on_rate_limited(2);
        assert_eq!(l.get(), 1);
        assert_eq!(SlotLimit::new(0).get(), 1);
    }
}

//! Adaptive polling: the schedule learns how long jobs take (a running mean
//! and mean deviation of observed durations), polls first near the expected
//! completion, then backs off exponentially up to `api.poll_max`.

use std::time::Duration;

/// Running estimate of job durations.
#[derive(Debug, Clone, Default)]
pub struct DurationEstimator {
    mean: Option<f64>,
    dev: f64,
}

impl DurationEstimator {
    /// Weight of a new observation.
    const ALPHA: f64 = 0.2;

    /// Feeds the observed submit-to-completion time of a job.
    pub fn observe(&mut self, d: Duration) {
        let x = d.as_secs_f64();
        match self.mean {
            None => {
                self.mean = Some(x);
                self.dev = x / 4.0;
            }
            Some(m) => {
                let err = x - m;
                self.mean = Some(m + Self::ALPHA * err);
                self.dev += Self::ALPHA * (err.abs() - self.dev);
            }
        }
    }

    /// When most jobs are done: mean plus one mean deviation.
    pub fn expected(&self) -> Option<Duration> {
        self.mean.map(|m| Duration::from_secs_f64((m + self.dev).max(0.0)))
    }

    /// The typical spread of job durations.
    pub fn spread(&self) -> Option<Duration> {
        self.mean.map(|_| Duration::from_secs_f64(self.dev.max(0.0)))
    }
}

/// The wait before poll number `index` (0-based) of a job submitted
/// `elapsed` ago.
///
/// - first poll: at the expected completion time (or `initial` while nothing
///   has been learnt);
/// - later polls: a step of a quarter of the spread (at least 100 ms, or
///   `initial` unlearnt) that doubles each time, never above `max`.
pub fn next_delay(
    index: u32,
    elapsed: Duration,
    est: &DurationEstimator,
    initial: Duration,
    max: Duration,
) -> Duration {
    // Small enough for near-instant jobs; the learnt estimate dominates otherwise.
    let floor = Duration::from_millis(10);
    let d = if index == 0 {
        est.expected().map_or(initial, |e| e.saturating_sub(elapsed))
    } else {
        let step = est
            .spread()
            .map_or(initial, |s| (s / 4).max(Duration::from_millis(100)));
        step.saturating_mul(1 << (index - 1).min(16))
    };
    d.clamp(floor, max.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    #[test]
    fn unlearnt_schedule_uses_initial_then_doubles() {
        let e = DurationEstimator::default();
        let (i, m) = (S(1.0), S(30.0));
        assert_eq!(next_delay(0, S(0.0), &e, i, m), S(1.0));
        assert_eq!(next_delay(1, S(1.0), &e, i, m), S(1.0));
        assert_eq!(next_delay(2, S(2.0), &e, i, m), S(2.0));
        assert_eq!(next_delay(3, S(4.0), &e, i, m), S(4.0));
        assert_eq!(next_delay(10, S(4.0), &e, i, m), S(30.0));
    }

    #[test]
    fn learnt_schedule_polls_near_expected_completion() {
        let mut e = DurationEstimator::default();
        for _ in 0..50 {
            e.observe(S(2.0));
            e.observe(S(2.4));
        }
        let first = next_delay(0, S(0.0), &e, S(1.0), S(30.0));
        assert!(first > S(2.1) && first < S(2.6), "{first:?}");
        let second = next_delay(1, first, &e, S(1.0), S(30.0));
        assert!(second >= S(0.1) && second < S(0.5), "{second:?}");
        // A job polled late still gets a small positive delay.
        assert_eq!(next_delay(0, S(100.0), &e, S(1.0), S(30.0)), S(0.01));
    }

    #[test]
    fn estimator_follows_change() {
        let mut e = DurationEstimator::default();
        e.observe(S(10.0));
        for _ in 0..40 {
            e.observe(S(2.0));
        }
        let x = e.expected().unwrap().as_secs_f64();
        assert!((2.0..2.5).contains(&x), "{x}");
    }
}

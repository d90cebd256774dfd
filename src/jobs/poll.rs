//! Adaptive polling: the schedule learns how long jobs take (a running mean
//! and mean deviation of observed durations), polls first near the expected
//! completion, then backs off exponentially up to `api.poll_max`.

use std::time::Duration;

/// Running estimate of job durations.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurationEstimator {
    mean: Option<f64>,
    dev: f64,
}

impl DurationEstimator {
    /// Weight of a new observation.
    const ALPHA: f64 = 0.2;

    /// Feeds the observed submit-to-completion time of a job.
    pub(crate) fn observe(&mut self, d: Duration) {
        let x = d.as_secs_f64();
        match self.mean {
            None => {
                self.mean = Some(x);
                // A small initial spread: real spread shows up in later observations.
                self.dev = x / 50.0;
            }
            Some(m) => {
                let err = x - m;
                self.mean = Some(m + Self::ALPHA * err);
                self.dev += Self::ALPHA * (err.abs() - self.dev);
            }
        }
    }

    /// When most jobs are done: mean plus one mean deviation (at least 1%
    /// of the mean, so that a job of a steady length is not polled a moment
    /// too early).
    pub(crate) fn expected(&self) -> Option<Duration> {
        self.mean
            .map(|m| Duration::from_secs_f64((m + self.dev.max(m * 0.01)).max(0.0)))
    }

    /// The typical spread of job durations.
    pub(crate) fn spread(&self) -> Option<Duration> {
        self.mean.map(|_| Duration::from_secs_f64(self.dev.max(0.0)))
    }
}

/// The wait before poll number `index` (0-based) of a job submitted
/// `elapsed` ago.
///
/// - first poll: at the expected completion time (or `initial` while nothing
///   has been learnt);
/// - later polls: a step of a quarter of the spread (at least 50 ms) that
///   doubles each time; while nothing has been learnt, an eighth of
///   `initial` growing by half each time, so the first jobs are not seen
///   long after they finish; never above `max`.
pub(crate) fn next_delay(
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
        match est.spread() {
            Some(s) => (s / 4)
                .max(Duration::from_millis(50))
                .saturating_mul(1 << (index - 1).min(16)),
            None => (initial / 8).mul_f64(1.5f64.powi((index - 1).min(40) as i32)),
        }
    };
    d.clamp(floor, max.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    #[test]
    fn unlearnt_schedule_starts_at_initial_then_grows_from_an_eighth() {
        let e = DurationEstimator::default();
        let (i, m) = (S(1.0), S(30.0));
        assert_eq!(next_delay(0, S(0.0), &e, i, m), S(1.0));
        assert_eq!(next_delay(1, S(1.0), &e, i, m), S(0.125));
        assert_eq!(next_delay(2, S(1.125), &e, i, m), S(0.1875));
        assert_eq!(next_delay(3, S(1.3), &e, i, m), S(0.28125));
        assert_eq!(next_delay(30, S(100.0), &e, i, m), S(30.0));
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
        assert!(second >= S(0.05) && second < S(0.5), "{second:?}");
        // A job polled late still gets a small positive delay.
        assert_eq!(next_delay(0, S(100.0), &e, S(1.0), S(30.0)), S(0.01));
    }

    #[test]
    fn steady_jobs_are_polled_just_after_they_finish() {
        let mut e = DurationEstimator::default();
        for _ in 0..60 {
            e.observe(S(2.0));
        }
        let first = next_delay(0, S(0.0), &e, S(1.0), S(30.0)).as_secs_f64();
        assert!((2.01..2.05).contains(&first), "{first}");
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

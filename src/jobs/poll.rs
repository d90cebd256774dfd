//! Adaptive polling: the schedule learns the distribution of job durations
//! (the last [`DurationEstimator::WINDOW`] jobs), polls first when the
//! fastest of them would be done, then in small steps across the range the
//! durations spread over, and backs off beyond the longest one seen, up to
//! `api.poll_max`. Jobs of a steady length are polled once, just after they
//! finish; jobs that vary are seen soon after they finish at the cost of a
//! few cheap "still running" answers.
//!
//! The schedule runs from when the accepted submit was sent; the job starts
//! when the API has read it, a few milliseconds later. That delay is learnt
//! too (the API's `created_at` against the send, within the submit's round
//! trip), so a steady job's first poll does not arrive before it ends.

use std::collections::VecDeque;
use std::time::Duration;

/// The durations of recent jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurationEstimator {
    recent: VecDeque<f64>,
    /// Send-to-creation delays of recent submits (seconds).
    accept: VecDeque<f64>,
}

/// What the estimator says about the jobs to come (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    /// The 5th percentile.
    low: f64,
    /// The median.
    median: f64,
    /// The longest seen.
    high: f64,
    /// The 90th percentile of send-to-creation delays (0 when unknown).
    accept: f64,
}

impl DurationEstimator {
    /// How many recent jobs the schedule follows: enough for a stable 5th
    /// percentile, few enough to follow a change within a minute of jobs.
    pub(crate) const WINDOW: usize = 40;

    /// Feeds the duration of a job (the API's own, when it reports one).
    pub(crate) fn observe(&mut self, d: Duration) {
        push(&mut self.recent, d);
    }

    /// Feeds how long after its send the API created a job.
    pub(crate) fn observe_accept(&mut self, d: Duration) {
        push(&mut self.accept, d);
    }

    /// Whether nothing has been learnt yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    fn spread(&self) -> Option<Spread> {
        if self.recent.is_empty() {
            return None;
        }
        let v = sorted(&self.recent);
        let a = sorted(&self.accept);
        let (low, median, high) = (quantile(&v, 0.05), quantile(&v, 0.5), quantile(&v, 1.0));
        Some(Spread {
            low,
            median,
            high,
            accept: if a.is_empty() { 0.0 } else { quantile(&a, 0.9) },
        })
    }
}

fn push(window: &mut VecDeque<f64>, d: Duration) {
    if window.len() == DurationEstimator::WINDOW {
        window.pop_front();
    }
    window.push_back(d.as_secs_f64());
}

fn sorted(window: &VecDeque<f64>) -> Vec<f64> {
    let mut v: Vec<f64> = window.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// `q` of the sorted, non-empty `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The wait before poll number `index` (0-based) of a job whose submit
/// was sent `elapsed` ago. `min_step` is the smallest step between two polls of a
/// job (what the request budget allows).
///
/// - Nothing learnt yet: the first poll after `initial`, then from an
///   eighth of it (at least `min_step`), growing by a quarter each time, so
///   the first jobs are seen within a fifth of their length (they are the
///   first to hold all five slots: growing by half, 2-second jobs were seen
///   350 ms late, 0.8 % of a drain's slot time).
/// - First poll: at the 5th percentile of recent durations plus 0.1% of
///   the median, at least 2 ms, after the usual accept delay (a job of a
///   steady length is not polled a moment too early; the API's own
///   timestamps make the estimate exact).
/// - Up to the longest duration seen: steps of a 40th of the range
///   (at least `min_step`), so a job that varies is seen within a small
///   fraction of its length.
/// - Beyond it: the time since the longest duration (at least a step), so
///   the wait doubles while a job runs unusually long.
/// - Never above `max`.
pub(crate) fn next_delay(
    index: u32,
    elapsed: Duration,
    est: &DurationEstimator,
    initial: Duration,
    min_step: Duration,
    max: Duration,
) -> Duration {
    // Small enough for near-instant jobs; the learnt spread dominates otherwise.
    let floor = Duration::from_millis(10);
    let secs = Duration::from_secs_f64;
    let d = match est.spread() {
        None if index == 0 => initial,
        None => (initial / 8)
            .mul_f64(1.25f64.powi((index - 1).min(60) as i32))
            .max(min_step),
        Some(s) => {
            let margin = (s.median * 0.001).max(0.002);
            let first = secs(s.accept + s.low + margin);
            if index == 0 && elapsed < first {
                first - elapsed
            } else {
                let step = secs((s.high - s.low) / 40.0).max(min_step);
                let beyond = elapsed.saturating_sub(secs(s.accept + s.high));
                step.max(beyond)
            }
        }
    };
    d.clamp(floor, max.max(floor))
}

/// The smallest step between two polls of one job: status polls of
/// `slots` jobs at once take at most half of `requests_per_minute`, the
/// rest is left for submits and downloads; never below 25 ms.
pub(crate) fn min_step(slots: usize, requests_per_minute: u32) -> Duration {
    let per_second = f64::from(requests_per_minute.max(1)) / 60.0 / 2.0;
    Duration::from_secs_f64(slots.max(1) as f64 / per_second).max(Duration::from_millis(25))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;
    const STEP: Duration = Duration::from_millis(25);

    fn learnt(durations: impl IntoIterator<Item = f64>) -> DurationEstimator {
        let mut e = DurationEstimator::default();
        for d in durations {
            e.observe(S(d));
        }
        e
    }

    /// The polls of a job that takes `job` seconds: (how many, how late the
    /// last one saw it done).
    fn polls(e: &DurationEstimator, job: f64) -> (u32, f64) {
        let mut t = Duration::ZERO;
        for index in 0.. {
            t += next_delay(index, t, e, S(1.0), STEP, S(30.0));
            if t.as_secs_f64() >= job {
                return (index + 1, t.as_secs_f64() - job);
            }
        }
        unreachable!()
    }

    #[test]
    fn unlearnt_schedule_starts_at_initial_then_grows_from_an_eighth() {
        let e = DurationEstimator::default();
        let (i, m) = (S(1.0), S(30.0));
        assert_eq!(next_delay(0, S(0.0), &e, i, STEP, m), S(1.0));
        assert_eq!(next_delay(1, S(1.0), &e, i, STEP, m), S(0.125));
        assert_eq!(next_delay(2, S(1.125), &e, i, STEP, m), S(0.15625));
        assert_eq!(next_delay(3, S(1.3), &e, i, STEP, m), S(0.1953125));
        assert_eq!(next_delay(50, S(100.0), &e, i, STEP, m), S(30.0));
        assert_eq!(
            next_delay(1, S(1.0), &e, i, S(0.5), m),
            S(0.5),
            "the request budget first"
        );
        for (job, most_polls) in [(2.0, 6), (10.0, 15), (60.0, 24)] {
            let (n, late) = polls(&e, job);
            assert!(n <= most_polls, "{job} s: {n} polls");
            assert!(late <= job / 5.0, "{job} s: seen {late} s late");
        }
    }

    #[test]
    fn steady_jobs_are_polled_once_just_after_they_finish() {
        let e = learnt([2.0; 60]);
        let (n, late) = polls(&e, 2.0);
        assert_eq!(n, 1);
        assert!((0.001..0.005).contains(&late), "{late}");
    }

    #[test]
    fn a_steady_job_the_api_creates_after_the_send_is_still_polled_once() {
        // The API reads the submit 1-8 ms after it was sent.
        let mut e = learnt([2.0; 40]);
        let before = polls(&e, 2.008).0;
        for i in 0..40 {
            e.observe_accept(S(0.001 + 0.007 * f64::from(i) / 39.0));
        }
        assert_eq!(before, 2, "without the accept delay the first poll is early");
        for delay in [0.001, 0.004, 0.0075] {
            let (n, late) = polls(&e, delay + 2.0);
            assert_eq!(n, 1, "accept delay {delay}");
            assert!(late < 0.01, "{late}");
        }
    }

    #[test]
    fn varying_jobs_are_seen_within_a_40th_of_their_spread() {
        // 30% jitter around 2 s: uniform in [1.4, 2.6].
        let e = learnt((0..40).map(|i| 1.4 + 1.2 * f64::from(i) / 39.0));
        let (mut total_polls, mut total_late, mut worst) = (0, 0.0, 0.0f64);
        for i in 0..=24 {
            let job = 1.4 + 0.05 * f64::from(i);
            let (n, late) = polls(&e, job);
            total_polls += n;
            total_late += late;
            worst = worst.max(late);
        }
        let mean_late = total_late / 25.0;
        assert!(mean_late <= 0.02, "jobs were seen {mean_late} s late on average");
        assert!(worst <= 0.1, "a job was seen {worst} s late");
        let mean = f64::from(total_polls) / 25.0;
        assert!(mean < 24.0, "{mean} polls per job");
    }

    #[test]
    fn a_job_longer_than_any_seen_is_polled_less_and_less() {
        let e = learnt([2.0; 40]);
        let at_4 = next_delay(5, S(4.0), &e, S(1.0), STEP, S(30.0));
        let at_10 = next_delay(6, S(10.0), &e, S(1.0), STEP, S(30.0));
        assert_eq!(at_4, S(2.0));
        assert_eq!(at_10, S(8.0));
        assert_eq!(next_delay(9, S(100.0), &e, S(1.0), STEP, S(30.0)), S(30.0));
    }

    #[test]
    fn the_step_respects_the_request_budget() {
        assert_eq!(min_step(5, 600), S(1.0));
        assert_eq!(min_step(5, 60_000), STEP);
        let e = learnt((0..40).map(|i| 1.0 + f64::from(i)));
        // Durations of 1..40 s: steps of (40 - 3) / 40 s (3 s is the 5th
        // percentile), or the budget's when larger.
        assert_eq!(next_delay(1, S(5.0), &e, S(1.0), STEP, S(30.0)), S(37.0 / 40.0));
        assert_eq!(next_delay(1, S(5.0), &e, S(1.0), S(3.0), S(30.0)), S(3.0));
    }

    #[test]
    fn the_schedule_follows_a_change_within_a_window() {
        let mut e = learnt([10.0; 40]);
        for _ in 0..DurationEstimator::WINDOW {
            e.observe(S(2.0));
        }
        assert_eq!(polls(&e, 2.0).0, 1);
    }
}

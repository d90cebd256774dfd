//! Adaptive polling: the schedule learns the distribution of job durations
//! (the last [`DurationEstimator::WINDOW`] jobs) and spends the polls the
//! request budget allows a job where jobs end: at the quantiles of the
//! recent durations, densely where many end, and never more than a step
//! (the job's share of the budget) apart once the first has gone, in a
//! sparse tail or beyond the longest job seen. Jobs of a steady
//! length are polled once, just after they finish; jobs that vary are seen
//! soon after they finish at the cost of a few cheap "still running"
//! answers, as many as the budget allows.
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
    /// The median.
    median: f64,
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
        let median = quantile(&v, 0.5);
        Some(Spread {
            median,
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

/// What a job may spend on status polls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// The first poll, before any duration is learnt (`api.poll_initial`).
    pub(crate) initial: Duration,
    /// One job's share of the poll budget: one poll per this, on average
    /// ([`min_step`]).
    pub(crate) min_step: Duration,
    /// The longest wait between two polls (`api.poll_max`).
    pub(crate) max: Duration,
}

/// The duration at quantile `q` (0..=1) of the sorted, non-empty `v`,
/// interpolated between neighbours.
fn interpolated(v: &[f64], q: f64) -> f64 {
    let pos = (v.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The wait before poll number `index` (0-based) of a job, counted from
/// `from`: the send of its accepted submit for the first poll, else the
/// send of the previous poll.
///
/// - Nothing learnt yet: the first poll after `initial`, then from an
///   eighth of it (at least `min_step`), growing by a quarter each time, so
///   the first jobs are seen within a fifth of their length (they are the
///   first to hold all five slots).
/// - Learnt: the polls a job may spend go where jobs end. The request
///   budget allows a job one poll per `min_step`, so about `median /
///   min_step` polls over a typical job; they are placed at the
///   quantiles of the last durations (`k` of them, so that the polls
///   actually spent, fewer for a job that ends early, match that
///   allowance), after the usual accept delay. Jobs of a steady length are
///   polled once, just after they end; jobs that vary are polled densely
///   where many end.
/// - Once polling has begun, never more than one step between two polls:
///   a job running where the recent durations are sparse (the tail of a
///   heavy-tailed spread, or beyond the longest seen) spends its own share
///   of the budget, one poll per step, instead of waiting for the next
///   quantile or backing off. Forty recent durations say little about the
///   tail; on the realistic job-time model (a heavy tail) the quantiles
///   alone, with a wait that doubled past the slowest seen, left a slot
///   idle 355 ms on average after a job's end, one poll a step 78 ms
///   (docs/BENCHMARKS.md, *realistic*).
/// - Never closer than a quarter of `min_step` to the previous poll (the
///   allowance is an average; the poll limiter keeps the total), never
///   above `max`.
pub(crate) fn next_delay(index: u32, from: Duration, est: &DurationEstimator, b: &Budget) -> Duration {
    // Small enough for near-instant jobs; the learnt spread dominates otherwise.
    let floor = Duration::from_millis(10);
    let secs = Duration::from_secs_f64;
    let d = match est.spread() {
        None if index == 0 => b.initial,
        None => (b.initial / 8)
            .mul_f64(1.25f64.powi((index - 1).min(60) as i32))
            .max(b.min_step),
        Some(s) => {
            let v = sorted(&est.recent);
            let margin = (s.median * 0.001).max(0.002);
            let step = b.min_step.as_secs_f64();
            let allowance = s.median / step.max(1e-3);
            let k = (2.0 * allowance - 1.0).round().clamp(1.0, 400.0) as usize;
            // The allowance is an average: a job may poll a few times in a
            // step where many jobs end (the poll limiter keeps the total).
            let earliest = from.as_secs_f64() + if index == 0 { 0.0 } else { step / 4.0 };
            let target = (1..=k)
                .map(|i| s.accept + interpolated(&v, i as f64 / k as f64) + margin)
                .find(|t| *t >= earliest);
            match target {
                Some(t) if index == 0 => secs(t) - from,
                Some(t) => (secs(t) - from).min(b.min_step),
                None => b.min_step,
            }
        }
    };
    d.clamp(floor, b.max.max(floor))
}

/// The smallest step between two polls of one job: status polls of
/// `slots` jobs at once take at most `requests_per_minute` (the status
/// endpoint's own limit); never below 25 ms.
pub(crate) fn min_step(slots: usize, requests_per_minute: u32) -> Duration {
    let per_second = f64::from(requests_per_minute.max(1)) / 60.0;
    Duration::from_secs_f64(slots.max(1) as f64 / per_second).max(Duration::from_millis(25))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    /// The budget of `api.requests_per_minute` for five slots.
    fn budget(rpm: u32) -> Budget {
        Budget {
            initial: S(1.0),
            min_step: min_step(5, rpm),
            max: S(30.0),
        }
    }

    fn learnt(durations: impl IntoIterator<Item = f64>) -> DurationEstimator {
        let mut e = DurationEstimator::default();
        for d in durations {
            e.observe(S(d));
        }
        e
    }

    /// The polls of a job that takes `job` seconds: (how many, how late the
    /// last one saw it done, the smallest gap between two polls).
    fn polls(e: &DurationEstimator, job: f64, b: &Budget) -> (u32, f64, f64) {
        let mut t = Duration::ZERO;
        let mut gap = f64::INFINITY;
        for index in 0.. {
            let d = next_delay(index, t, e, b);
            if index > 0 {
                gap = gap.min(d.as_secs_f64());
            }
            t += d;
            if t.as_secs_f64() >= job {
                return (index + 1, t.as_secs_f64() - job, gap);
            }
        }
        unreachable!()
    }

    /// Mean polls and mean lateness over jobs of the given durations.
    fn mean(e: &DurationEstimator, jobs: &[f64], b: &Budget) -> (f64, f64) {
        let (mut n, mut late) = (0.0, 0.0);
        for j in jobs {
            let (p, l, _) = polls(e, *j, b);
            n += f64::from(p);
            late += l;
        }
        (n / jobs.len() as f64, late / jobs.len() as f64)
    }

    #[test]
    fn unlearnt_schedule_starts_at_initial_then_grows_from_an_eighth() {
        let e = DurationEstimator::default();
        let b = Budget {
            min_step: S(0.025),
            ..budget(600)
        };
        assert_eq!(next_delay(0, S(0.0), &e, &b), S(1.0));
        assert_eq!(next_delay(1, S(1.0), &e, &b), S(0.125));
        assert_eq!(next_delay(2, S(1.125), &e, &b), S(0.15625));
        assert_eq!(next_delay(3, S(1.3), &e, &b), S(0.1953125));
        assert_eq!(next_delay(50, S(100.0), &e, &b), S(30.0));
        assert_eq!(
            next_delay(1, S(1.0), &e, &budget(600)),
            S(0.5),
            "the request budget first"
        );
        for (job, most_polls) in [(2.0, 6), (10.0, 15), (60.0, 24)] {
            let (n, late, _) = polls(&e, job, &b);
            assert!(n <= most_polls, "{job} s: {n} polls");
            assert!(late <= job / 5.0, "{job} s: seen {late} s late");
        }
    }

    #[test]
    fn steady_jobs_are_polled_once_just_after_they_finish() {
        for rpm in [60, 600, 12_000] {
            let e = learnt([2.0; 60]);
            let (n, late, _) = polls(&e, 2.0, &budget(rpm));
            assert_eq!(n, 1, "{rpm} requests per minute");
            assert!((0.001..0.005).contains(&late), "{late}");
        }
    }

    #[test]
    fn a_steady_job_the_api_creates_after_the_send_is_still_polled_once() {
        // The API reads the submit 1-8 ms after it was sent.
        let mut e = learnt([2.0; 40]);
        let before = polls(&e, 2.008, &budget(600)).0;
        for i in 0..40 {
            e.observe_accept(S(0.001 + 0.007 * f64::from(i) / 39.0));
        }
        assert_eq!(before, 2, "without the accept delay the first poll is early");
        for delay in [0.001, 0.004, 0.0075] {
            let (n, late, _) = polls(&e, delay + 2.0, &budget(600));
            assert_eq!(n, 1, "accept delay {delay}");
            assert!(late < 0.01, "{late}");
        }
    }

    #[test]
    fn varying_jobs_spend_about_what_the_budget_allows_where_jobs_end() {
        // 30% jitter around 2 s: uniform in [1.4, 2.6].
        let e = learnt((0..40).map(|i| 1.4 + 1.2 * f64::from(i) / 39.0));
        let jobs: Vec<f64> = (0..=24).map(|i| 1.4 + 0.05 * f64::from(i)).collect();
        // The default budget: one poll per half second per job, about
        // four per job.
        let (n, late) = mean(&e, &jobs, &budget(600));
        assert!(n <= 4.5, "{n} polls per job");
        assert!(late <= 0.13, "seen {late} s late on average");
        // A tenth of it: about two per five-second budget step.
        let (n, late) = mean(&e, &jobs, &budget(60));
        assert!(n <= 1.5, "{n} polls per job");
        assert!(late <= 0.7, "seen {late} s late on average");
        // A budget twenty times larger: one poll per 25 ms per job (80 in
        // a 2 s job), spent where jobs end; seen within a few hundredths.
        let (n, late) = mean(&e, &jobs, &budget(12_000));
        assert!(n <= 60.0, "{n} polls per job");
        assert!(late <= 0.03, "seen {late} s late on average");
    }

    #[test]
    fn heavy_tailed_jobs_are_polled_where_most_of_them_end() {
        // Log-normal-like: most jobs near 3 s, a few up to 20 s.
        let durations: Vec<f64> = (0..40)
            .map(|i| {
                let z = (f64::from(i) + 0.5) / 40.0;
                3.0 * (1.2 * (z - 0.5) * 3.0).exp()
            })
            .collect();
        let e = learnt(durations.iter().copied());
        let b = budget(12_000);
        let (n, late) = mean(&e, &durations, &b);
        // Evenly spaced polls from the first to the last duration, as many
        // per job, would see a job (max - min) / (2 polls) late.
        let spread = durations[39] - durations[0];
        assert!(late < spread / (2.0 * n) / 2.0, "{late} s late with {n} polls per job");
    }

    #[test]
    fn polls_of_one_job_keep_to_the_budget_on_average() {
        let durations: Vec<f64> = (0..40).map(|i| 1.0 + 0.5 * f64::from(i)).collect();
        let e = learnt(durations.iter().copied());
        for rpm in [60, 600, 12_000] {
            let b = budget(rpm);
            let step = b.min_step.as_secs_f64();
            let (mut polls_all, mut seconds) = (0.0, 0.0);
            for job in &durations {
                let (n, late, gap) = polls(&e, *job, &b);
                assert!(gap + 1e-9 >= step / 4.0, "{rpm}: a gap of {gap} s");
                polls_all += f64::from(n);
                seconds += job + late;
            }
            let per_step = polls_all * step / seconds;
            assert!(per_step <= 1.3, "{rpm}: {per_step} polls per step of the budget");
        }
    }

    #[test]
    fn a_job_longer_than_any_seen_is_polled_once_a_step() {
        let e = learnt([2.0; 40]);
        for rpm in [60, 600, 12_000] {
            let b = budget(rpm);
            for (index, from) in [(5, 4.0), (6, 10.0), (9, 100.0)] {
                assert_eq!(next_delay(index, S(from), &e, &b), b.min_step.min(b.max), "{rpm}");
            }
        }
    }

    #[test]
    fn a_job_in_a_sparse_tail_is_polled_once_a_step() {
        // Most jobs near 3 s, two far out: between them no quantile.
        let e = learnt((0..38).map(|i| 2.5 + f64::from(i) / 37.0).chain([20.0, 40.0]));
        let b = budget(600);
        for from in [5.0, 12.0, 25.0] {
            assert_eq!(next_delay(7, S(from), &e, &b), b.min_step);
        }
        // Before the first quantile, the first poll waits for it.
        assert!(next_delay(0, S(0.0), &e, &b) > S(2.5));
    }

    #[test]
    fn the_step_respects_the_request_budget() {
        assert_eq!(min_step(5, 600), S(0.5));
        assert_eq!(min_step(5, 60_000), S(0.025));
    }

    #[test]
    fn the_schedule_follows_a_change_within_a_window() {
        let mut e = learnt([10.0; 40]);
        for _ in 0..DurationEstimator::WINDOW {
            e.observe(S(2.0));
        }
        assert_eq!(polls(&e, 2.0, &budget(600)).0, 1);
    }
}

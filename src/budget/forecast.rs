//! The forecast: what the backlog (the consumer lag and the records
//! consumed but not yet published) is expected to cost, at the credits per
//! published record of the last [`WINDOW`] (that rate holds the recent
//! match rate and the recent share of cache hits and repeats alike).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks.
pub(crate) const WINDOW: Duration = Duration::from_secs(300);

/// Samples of (when, records published, credits spent).
#[derive(Debug, Default)]
pub(crate) struct Forecast {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Forecast {
    /// Adds a sample; returns the credits `waiting` records are expected
    /// to cost, once a rate is known.
    pub(crate) fn sample(&mut self, now: Instant, published: u64, credits: u64, waiting: i64) -> Option<u64> {
        self.samples.push_back((now, published, credits));
        while self
            .samples
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        let (_, c0, k0) = *self.samples.front()?;
        let records = published.saturating_sub(c0);
        if records == 0 {
            return None;
        }
        let per_record = credits.saturating_sub(k0) as f64 / records as f64;
        Some((waiting.max(0) as f64 * per_record).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_costs_the_recent_credits_per_record() {
        let mut f = Forecast::default();
        let t = Instant::now();
        assert_eq!(f.sample(t, 1000, 50, 10_000), None, "no rate yet");
        // 1,000 records cost 300 credits since: 0.3 per record.
        assert_eq!(f.sample(t + Duration::from_secs(60), 2000, 350, 10_000), Some(3000));
        // Old samples leave the window: only the last minute counts.
        f.sample(t + Duration::from_secs(400), 3000, 350, 0);
        assert_eq!(f.sample(t + Duration::from_secs(460), 4000, 350, 5_000), Some(0));
    }
}

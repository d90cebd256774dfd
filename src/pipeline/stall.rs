//! Stall watch: Kafka that takes no write for a while (two of three
//! brokers down, so no write reaches `min.insync.replicas`; the brokers
//! unreachable) makes no record fail yet (the producer retries until
//! `message.timeout.ms`), but the pipeline stands still. The watch tells
//! that apart from a quiet pipeline: writes waiting, and none acknowledged,
//! for [`STALLED_AFTER`]. `/readyz` then says so, with a metric and one
//! log line, and clears when writes are taken again.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::health::Health;
use crate::metrics::Metrics;

/// Writes waiting with none acknowledged for this long is a stall.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Whether the producer's writes stand still.
#[derive(Debug, Default)]
pub(crate) struct StallWatch {
    /// Acknowledgements counted at the last look.
    acked: u64,
    /// Since when writes wait without any acknowledged.
    waiting_since: Option<Instant>,
}

impl StallWatch {
    /// One look at `now`: `pending` writes not yet acknowledged, `acked`
    /// acknowledgements so far. Returns for how long writes have stood
    /// still, once that is [`STALLED_AFTER`] or more.
    pub(crate) fn look(&mut self, now: Instant, pending: u64, acked: u64) -> Option<Duration> {
        let moved = acked != self.acked;
        self.acked = acked;
        if pending == 0 || moved {
            self.waiting_since = None;
            return None;
        }
        let since = *self.waiting_since.get_or_insert(now);
        let still = now.saturating_duration_since(since);
        (still >= STALLED_AFTER).then_some(still)
    }

    /// One look now, reported: `/readyz`, the metric, and a log line when
    /// the stall begins and when it ends.
    pub(crate) fn report(&mut self, pending: u64, acked: u64, health: &Health, metrics: &Metrics) {
        let stalled = self.look(Instant::now(), pending, acked);
        let was = health.kafka_stalled();
        match stalled {
            Some(still) => {
                if !was {
                    warn!(
                        pending,
                        seconds = still.as_secs(),
                        "Kafka acknowledges none of the writes waiting; nothing is lost, the producers keep trying"
                    );
                }
                health.set_kafka(Some(format!(
                    "Kafka has acknowledged none of {pending} writes for {} s",
                    still.as_secs()
                )));
            }
            None if was => {
                info!("Kafka acknowledges writes again");
                health.set_kafka(None);
            }
            None => {}
        }
        metrics.set_writes_stalled(stalled.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_waiting_without_any_acknowledged_are_a_stall() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = StallWatch::default();
        assert_eq!(w.look(at(0), 0, 0), None, "nothing waits");
        assert_eq!(w.look(at(1), 5, 0), None, "waiting, just now");
        assert_eq!(w.look(at(10), 5, 0), None, "9 s without an ack");
        assert_eq!(w.look(at(11), 5, 0), Some(Duration::from_secs(10)));
        assert_eq!(w.look(at(12), 5, 3), None, "an ack: moving again");
        assert_eq!(w.look(at(30), 5, 3), None, "the clock starts at the next look");
        assert_eq!(w.look(at(40), 5, 3), Some(Duration::from_secs(10)));
        assert_eq!(w.look(at(41), 0, 3), None, "nothing waits any more");
    }
}

//! Offset commits, off the consumer thread. The consumer thread offers the
//! partitions whose safe offset moved; a committer thread commits them
//! synchronously, so the outcome is known (librdkafka reports the result of
//! an asynchronous manual commit only to an `offset_commit_cb`, which
//! rust-rdkafka does not install). While the group coordinator is
//! unreachable librdkafka holds a commit for up to `session.timeout.ms`;
//! on this thread that never stalls polling, heartbeats or rebalances.
//! Only the latest offer waits: a newer one replaces it.

use std::sync::{Condvar, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use tracing::warn;

use super::rebalance::SourceContext;
use crate::offsets::{commit_list, CommitPoint};

#[derive(Debug, Default)]
struct State {
    offer: Option<Vec<CommitPoint>>,
    /// A revoke holds the commit lock (or waits for it): take no offer.
    held: bool,
    stop: bool,
}

/// The hand-over between the consumer thread and the committer thread.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    state: Mutex<State>,
    wake: Condvar,
    /// Held while a commit is in progress.
    busy: Mutex<()>,
}

impl Commits {
    /// Offers `points` for commit, replacing an offer not yet taken.
    pub(crate) fn offer(&self, points: Vec<CommitPoint>) {
        self.state.lock().expect("commits").offer = Some(points);
        self.wake.notify_one();
    }

    /// Drops the pending offer and waits for a commit in progress, so that
    /// no older commit lands after the caller's own (a revoke). The
    /// committer takes no offer while the guard lives.
    pub(crate) fn exclusive(&self) -> Exclusive<'_> {
        {
            let mut s = self.state.lock().expect("commits");
            s.offer = None;
            s.held = true;
        }
        Exclusive {
            commits: self,
            _busy: self.busy.lock().expect("commits"),
        }
    }

    /// Drops the pending offer without waiting (a lost assignment: the
    /// group refuses this member's commits anyway).
    pub(crate) fn drop_offer(&self) {
        self.state.lock().expect("commits").offer = None;
    }

    /// Ends the committer thread (after a commit in progress).
    pub(crate) fn stop(&self) {
        self.state.lock().expect("commits").stop = true;
        self.wake.notify_one();
    }

    /// Blocks until there is an offer (true) or the committer must stop.
    fn wait_for_offer(&self) -> bool {
        let mut s = self.state.lock().expect("commits");
        while (s.offer.is_none() || s.held) && !s.stop {
            s = self.wake.wait(s).expect("commits");
        }
        !s.stop
    }

    fn take(&self) -> Option<Vec<CommitPoint>> {
        self.state.lock().expect("commits").offer.take()
    }
}

/// Exclusive use of commits, from [`Commits::exclusive`].
pub(crate) struct Exclusive<'a> {
    commits: &'a Commits,
    _busy: MutexGuard<'a, ()>,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.commits.state.lock().expect("commits").held = false;
        self.commits.wake.notify_one();
    }
}

/// The committer thread's loop, until [`Commits::stop`].
pub(crate) fn run_committer(consumer: &BaseConsumer<SourceContext>) {
    let commits = &consumer.context().commits;
    while commits.wait_for_offer() {
        let _busy = commits.busy.lock().expect("commits");
        // Taken under `busy`: a revoke in between has dropped it.
        let Some(points) = commits.take() else {
            continue;
        };
        if let Err(e) = commit_now(consumer, &points) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }
}

/// Commits `points` synchronously and records the outcome; with
/// `kafka.exactly_once`, in a transaction with the staged records below
/// them, sent with the group's metadata (fenced by its generation).
pub(crate) fn commit_now(consumer: &BaseConsumer<SourceContext>, points: &[CommitPoint]) -> KafkaResult<()> {
    let ctx = consumer.context();
    let result = if ctx.sink.is_transactional() {
        match consumer.group_metadata() {
            Some(group) => ctx.sink.transact(points, &group),
            // Not in a group (yet): nothing can be committed.
            None => Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::State)),
        }
    } else {
        consumer.commit(&commit_list(points), CommitMode::Sync)
    };
    ctx.metrics.commit(result.is_ok());
    if result.is_ok() {
        let mut t = ctx.tracker.lock().expect("tracker");
        for c in points {
            t.mark_committed(c);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn point(offset: i64) -> Vec<CommitPoint> {
        vec![CommitPoint {
            tp: (Arc::from("in"), 0),
            offset,
        }]
    }

    #[test]
    fn only_the_latest_offer_waits() {
        let c = Commits::default();
        c.offer(point(1));
        c.offer(point(2));
        assert!(c.wait_for_offer());
        assert_eq!(c.take().unwrap()[0].offset, 2);
        assert!(c.take().is_none());
    }

    #[test]
    fn a_revoke_drops_the_offer_and_holds_the_committer_off() {
        let c = Arc::new(Commits::default());
        c.offer(point(1));
        let guard = c.exclusive();
        assert!(c.take().is_none(), "the older offer is dropped");
        c.offer(point(2));
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.wait_for_offer())
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "no offer is taken while the revoke holds commits"
        );
        drop(guard);
        assert!(waiter.join().unwrap());
        c.drop_offer();
        assert!(c.take().is_none());
    }

    #[test]
    fn stop_ends_the_wait() {
        let c = Commits::default();
        c.stop();
        assert!(!c.wait_for_offer());
    }
}

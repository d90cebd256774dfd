//! Rebalances: the consumer's callbacks, which run on the consumer thread
//! inside `poll`. Each delegates to a plain method: [`SourceContext::on_revoke`]
//! (drain within a bound, commit what is safe, forget the rest; a lost
//! assignment at once) and [`SourceContext::on_assign`] (fresh epochs).
//! Jobs a previous owner left in flight are the journal's to find (see
//! `crate::jobs`), not the commit's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::ClientContext;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::commit::{self, Commits};
use super::{SourceControl, SourceEvent, SourceParts};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::TopicPartition;
use crate::offsets::{CommitPoint, OffsetTracker};
use crate::sink::KafkaSink;

/// Consumer callbacks and what they share with the consumer loop.
pub(crate) struct SourceContext {
    pub(super) tracker: Arc<Mutex<OffsetTracker>>,
    pub(super) metrics: Arc<Metrics>,
    /// The sink: with `kafka.exactly_once`, commits are its transactions.
    pub(super) sink: Arc<KafkaSink>,
    health: Arc<Health>,
    control: Arc<SourceControl>,
    drain_timeout: Duration,
    /// Assignments received so far. librdkafka keeps a partition's
    /// application pause across revoke and re-assignment, so the consumer
    /// loop resumes every new assignment once it is under budget.
    assignments: AtomicU64,
    /// Hand-over to the committer thread.
    pub(super) commits: Commits,
    tx: UnboundedSender<SourceEvent>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

fn names(tps: &[TopicPartition]) -> Vec<String> {
    tps.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

impl SourceContext {
    pub(super) fn new(p: &SourceParts) -> Self {
        Self {
            tracker: p.tracker.clone(),
            metrics: p.metrics.clone(),
            sink: p.sink.clone(),
            health: p.health.clone(),
            control: p.control.clone(),
            drain_timeout: p.cfg.rebalance_drain_timeout,
            assignments: AtomicU64::new(0),
            commits: Commits::default(),
            tx: p.tx.clone(),
        }
    }

    /// Assignments received so far.
    pub(super) fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Relaxed)
    }

    /// Partitions revoked: a lost assignment (the group session expired,
    /// e.g. while the coordinator was unreachable) may already belong to
    /// another member, and the group refuses this member's commits: no
    /// drain, no commit. Otherwise no commit of the committer's may land
    /// after this one (without waiting for one held while the coordinator
    /// is away), what is in flight gets `kafka.rebalance_drain_timeout` to
    /// finish (none while closing), and the safe offsets are committed.
    pub(super) fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        self.metrics.rebalance("revoke");
        let revoked = partitions(tpl);
        let lost = consumer.assignment_lost();
        let _exclusive = if lost {
            warn!("assignment lost (group session expired); uncommitted records of these partitions will be processed again");
            self.commits.drop_offer();
            None
        } else {
            Some(self.commits.exclusive())
        };
        let bound = if lost || self.control.close.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.drain_timeout
        };
        self.drain(&revoked, bound);
        let points = self.forget(&revoked);
        let _ = self.tx.send(SourceEvent::Revoked);
        if !points.is_empty() && !lost {
            match commit::commit_now(consumer, &points) {
                Ok(()) => info!(
                    partitions = points.len(),
                    "committed safe offsets of revoked partitions"
                ),
                Err(e) => warn!(error = %e, "commit on revoke failed; those records will be processed again"),
            }
        }
        for tp in &revoked {
            self.sink.forget_staged(tp);
        }
        info!(partitions = ?names(&revoked), "partitions revoked");
    }

    /// Waits (at most `bound`) until nothing of `revoked` is in flight.
    fn drain(&self, revoked: &[TopicPartition], bound: Duration) {
        let deadline = Instant::now() + bound;
        loop {
            let pending: usize = {
                let t = self.tracker.lock().expect("tracker");
                revoked.iter().map(|tp| t.pending_in(tp)).sum()
            };
            if pending == 0 {
                return;
            }
            if Instant::now() >= deadline {
                warn!(
                    pending,
                    "revoked partitions not drained in time; their rest is dropped uncommitted"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forgets `revoked` in the tracker; returns their commit points.
    fn forget(&self, revoked: &[TopicPartition]) -> Vec<CommitPoint> {
        let mut t = self.tracker.lock().expect("tracker");
        let mut points = Vec::new();
        for tp in revoked {
            points.extend(t.commit_point(tp));
            t.revoke(tp);
            self.metrics.forget_partition(&tp.0, tp.1);
        }
        self.metrics.set_in_flight(t.in_flight());
        points
    }

    /// Partitions assigned: each starts a fresh epoch.
    pub(super) fn on_assign(&self, tpl: &TopicPartitionList) {
        self.metrics.rebalance("assign");
        self.assignments.fetch_add(1, Ordering::Relaxed);
        let assigned = partitions(tpl);
        {
            let mut t = self.tracker.lock().expect("tracker");
            for tp in &assigned {
                t.assign(tp.clone());
            }
        }
        if !self.health.joined() {
            self.metrics.startup_mark("joined");
            info!(
                seconds = format!("{:.2}", self.metrics.born().elapsed().as_secs_f64()),
                "joined the consumer group"
            );
        }
        self.health.set_joined(true);
        let _ = self.tx.send(SourceEvent::Assigned);
        info!(partitions = ?names(&assigned), "partitions assigned");
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.set_consumer_lag(topic, *p, part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.on_revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.on_assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

//! Source: the Kafka consumer, on a thread of its own so that it polls
//! continuously (heartbeats, rebalances) whatever the rest of the pipeline
//! does. It decodes each record, tracks its offset, dead-letters bad input
//! directly and hands valid identifiers to the dispatcher. Back-pressure
//! pauses every partition while the in-flight budget is spent. Commits
//! advance only to each partition's contiguous watermark (see [`offsets`]);
//! the periodic ones run on a committer thread (see [`commit`]).
//!
//! Rebalances: on revoke, records of the revoked partitions get a bounded
//! time to finish, what is safe is committed synchronously, and the rest is
//! forgotten uncommitted (a lost assignment is forgotten at once); on
//! assign, each partition starts a fresh epoch.

pub mod commit;
pub mod offsets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::ClientContext;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, error, info, warn};

use crate::config::KafkaConfig;
use crate::decode::{Decoder, Identifier};
use crate::metrics::Metrics;
use crate::server::Health;
use crate::sink::{InputRecord, Sink};
use commit::Commits;
use offsets::{OffsetTracker, TopicPartition};

/// A decoded record on its way to the dispatcher.
#[derive(Debug)]
pub struct Work {
    /// The record.
    pub rec: InputRecord,
    /// Its identifier.
    pub id: Identifier,
}

/// What the consumer thread hands the dispatcher.
#[derive(Debug)]
pub enum SourceEvent {
    /// Decoded records, in consumption order.
    Records(Vec<Work>),
    /// Jobs named in the commit metadata of newly assigned partitions
    /// (submitted by a previous owner): reuse their results.
    Recover(Vec<String>),
}

/// Flags the pipeline uses to steer the consumer thread.
#[derive(Debug, Default)]
pub struct SourceControl {
    /// Stop taking new records (shutdown has begun).
    pub stop_taking: AtomicBool,
    /// Commit what is safe and leave the group.
    pub close: AtomicBool,
}

/// Consumer callbacks.
pub struct SourceContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    control: Arc<SourceControl>,
    drain_timeout: Duration,
    /// Assignments received so far. librdkafka keeps a partition's
    /// application pause across revoke and re-assignment, so the consumer
    /// loop resumes every new assignment once it is under budget.
    assignments: std::sync::atomic::AtomicU64,
    /// Hand-over to the committer thread.
    commits: Commits,
    tx: UnboundedSender<SourceEvent>,
}

impl SourceContext {
    /// Reads the commit metadata of newly assigned partitions and hands the
    /// jobs it names to the dispatcher. Such a job can only cover offsets
    /// below the partition's current end, so it stays in this instance's
    /// metadata until the commit passes that end.
    fn recover_jobs(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read committed offsets; jobs of a previous owner are not reused");
                return;
            }
        };
        let mut all = Vec::new();
        for e in committed.elements() {
            let ids = offsets::decode_jobs(e.metadata());
            if ids.is_empty() {
                continue;
            }
            let end = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .map_or(i64::MAX, |(_, high)| high - 1);
            let tp: TopicPartition = (Arc::from(e.topic()), e.partition());
            let mut t = self.tracker.lock().expect("tracker");
            for id in &ids {
                t.add_recovered_job(&tp, &Arc::from(id.as_str()), end);
            }
            all.extend(ids);
        }
        all.sort();
        all.dedup();
        if !all.is_empty() {
            info!(
                jobs = all.len(),
                "commit metadata names jobs of a previous owner; reusing their results"
            );
            let _ = self.tx.send(SourceEvent::Recover(all));
        }
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
        let Rebalance::Revoke(tpl) = rebalance else { return };
        self.metrics.rebalance("revoke");
        let revoked: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
            .collect();
        // A lost assignment (the group session expired, e.g. while the
        // coordinator was unreachable) may already belong to another member,
        // and the group refuses this member's commits: no drain, no commit.
        let lost = consumer.assignment_lost();
        // Otherwise no commit of the committer's may land after this one
        // (without waiting for one held while the coordinator is away).
        let _exclusive = if lost {
            warn!("assignment lost (group session expired); uncommitted records of these partitions will be processed again");
            self.commits.drop_offer();
            None
        } else {
            Some(self.commits.exclusive())
        };
        // Let what is in flight finish, within a bound.
        let bound = if lost || self.control.close.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            self.drain_timeout
        };
        let deadline = Instant::now() + bound;
        loop {
            let pending: usize = {
                let t = self.tracker.lock().expect("tracker");
                revoked.iter().map(|tp| t.pending_in(tp)).sum()
            };
            if pending == 0 || Instant::now() >= deadline {
                if pending > 0 {
                    warn!(
                        pending,
                        "revoked partitions not drained in time; their rest is dropped uncommitted"
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut points = Vec::new();
        {
            let mut t = self.tracker.lock().expect("tracker");
            for tp in &revoked {
                points.extend(t.commit_point(tp));
                t.revoke(tp);
                self.metrics.forget_partition(&tp.0, tp.1);
            }
            self.metrics.set_in_flight(t.in_flight());
        }
        if !points.is_empty() && !lost {
            match commit::commit_now(consumer, &points) {
                Ok(()) => info!(
                    partitions = points.len(),
                    "committed safe offsets of revoked partitions"
                ),
                Err(e) => warn!(error = %e, "commit on revoke failed; those records will be processed again"),
            }
        }
        info!(partitions = ?revoked.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalance("assign");
                self.assignments.fetch_add(1, Ordering::Relaxed);
                {
                    let mut t = self.tracker.lock().expect("tracker");
                    for e in tpl.elements() {
                        t.assign((Arc::from(e.topic()), e.partition()));
                    }
                }
                if tpl.count() > 0 {
                    self.recover_jobs(consumer, tpl);
                }
                self.health.set_joined(true);
                info!(
                    partitions = ?tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// Settings of the consumer thread.
pub struct SourceParts {
    /// Kafka settings.
    pub cfg: KafkaConfig,
    /// Record decoder.
    pub decoder: Decoder,
    /// Shared offset tracker.
    pub tracker: Arc<Mutex<OffsetTracker>>,
    /// For dead letters of undecodable records.
    pub sink: Arc<Sink>,
    /// To the dispatcher.
    pub tx: UnboundedSender<SourceEvent>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health flags.
    pub health: Arc<Health>,
    /// Steering flags.
    pub control: Arc<SourceControl>,
}

/// Creates the consumer (so configuration errors surface at once) and
/// starts its thread.
pub fn spawn(parts: SourceParts) -> Result<JoinHandle<Result<(), String>>, KafkaError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &parts.cfg.brokers)
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Bounded prefetch: the in-flight budget, not librdkafka's queue,
        // should hold the backlog (librdkafka defaults: 64 MiB, 100000).
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "10000")
        .set("client.id", "identify-connector");
    for (k, v) in &parts.cfg.client_properties(false) {
        cc.set(k, v);
    }
    cc.set("group.id", &parts.cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let ctx = SourceContext {
        tracker: parts.tracker.clone(),
        metrics: parts.metrics.clone(),
        health: parts.health.clone(),
        control: parts.control.clone(),
        drain_timeout: parts.cfg.rebalance_drain_timeout,
        assignments: Default::default(),
        commits: Commits::default(),
        tx: parts.tx.clone(),
    };
    let consumer: BaseConsumer<SourceContext> = cc.create_with_context(ctx)?;
    let topics: Vec<&str> = parts.cfg.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let consumer = Arc::new(consumer);
    let thread_error = |e: std::io::Error| KafkaError::Subscription(format!("cannot start consumer thread: {e}"));
    let committer = {
        let consumer = consumer.clone();
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || commit::run_committer(&consumer))
            .map_err(thread_error)?
    };
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            let result = run(&consumer, &parts);
            consumer.context().commits.stop();
            let _ = committer.join();
            if result.is_ok() {
                info!("leaving the consumer group");
            }
            // The last reference: closing calls the revoke callback, which
            // commits what is safe.
            drop(consumer);
            result
        })
        .map_err(thread_error)
}

/// Polls until the pipeline asks the consumer to close (`Ok`) or a fatal
/// error; commits are handed to the committer thread.
fn run(consumer: &BaseConsumer<SourceContext>, p: &SourceParts) -> Result<(), String> {
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut paused = false;
    // The assignment last resumed (see `SourceContext::assignments`).
    let mut resumed_assignment = 0;
    let mut last_commit = Instant::now();
    let high = p.cfg.max_in_flight;
    let high_bytes = p.cfg.max_in_flight_bytes;
    loop {
        if p.control.close.load(Ordering::Relaxed) {
            return Ok(());
        }
        let stop = p.control.stop_taking.load(Ordering::Relaxed);
        // Back-pressure: pause everything at the budget, resume below 80%.
        let (in_flight, bytes) = {
            let t = p.tracker.lock().expect("tracker");
            (t.in_flight(), t.in_flight_bytes())
        };
        p.metrics.set_in_flight(in_flight);
        let over = stop || in_flight >= high || bytes >= high_bytes;
        let under = !stop && in_flight * 5 < high * 4 && bytes / 4 < high_bytes / 5;
        if over || under {
            // Pausing is re-applied to every assignment while over budget; a
            // new assignment is resumed once under it, even if the loop last
            // resumed an empty one: librdkafka keeps the pause of a revoked
            // partition, and it would never fetch again when assigned back.
            let assigned = consumer.context().assignments.load(Ordering::Relaxed);
            if let Ok(assignment) = consumer.assignment() {
                if over {
                    if consumer.pause(&assignment).is_ok() {
                        if !paused {
                            debug!(in_flight, bytes, "in-flight budget reached; partitions paused");
                        }
                        paused = true;
                        p.metrics.set_paused_partitions(assignment.count());
                    }
                } else if (paused || assigned != resumed_assignment) && consumer.resume(&assignment).is_ok() {
                    debug!(in_flight, "partitions resumed");
                    paused = false;
                    resumed_assignment = assigned;
                    p.metrics.set_paused_partitions(0);
                }
            }
        }
        if last_commit.elapsed() >= p.cfg.commit_interval {
            let points = p.tracker.lock().expect("tracker").commit_candidates();
            if !points.is_empty() {
                consumer.context().commits.offer(points);
            }
            last_commit = Instant::now();
        }
        // Take what is ready (up to the budget) and hand it over in one go:
        // one wake-up of the dispatcher per batch, not per record.
        let room = high.saturating_sub(in_flight).clamp(1, 1000);
        let mut batch = Vec::with_capacity(room.min(64));
        let mut wait = Duration::from_millis(100);
        while batch.len() < room {
            let msg = match consumer.poll(wait) {
                None => break,
                Some(Err(e)) => {
                    if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                        error!(error = %e, "fatal consumer error");
                        return Err(e.to_string());
                    }
                    warn!(error = %e, "consumer error");
                    break;
                }
                Some(Ok(m)) => m,
            };
            wait = Duration::ZERO;
            if stop {
                // Not tracked, so never committed: the next owner reads it again.
                continue;
            }
            let topic = match topics.get(msg.topic()) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(msg.topic());
                    topics.insert(msg.topic().to_string(), t.clone());
                    t
                }
            };
            let value = msg.payload().map(Bytes::copy_from_slice);
            let size = value.as_ref().map_or(0, |v| v.len()) + msg.key().map_or(0, |k| k.len());
            let Some(pos) =
                p.tracker
                    .lock()
                    .expect("tracker")
                    .track_consumed(&topic, msg.partition(), msg.offset(), size)
            else {
                continue;
            };
            p.metrics.record_consumed();
            let rec = InputRecord {
                pos,
                key: msg.key().map(Bytes::copy_from_slice),
                value,
                timestamp_ms: msg.timestamp().to_millis(),
            };
            match p.decoder.decode(rec.value.as_deref()) {
                Ok(id) => batch.push(Work { rec, id }),
                Err(e) => {
                    if let Err(err) = p.sink.send_dead_letter_blocking(&rec, e.reason(), &e.to_string()) {
                        return Err(err.to_string());
                    }
                }
            }
        }
        if !batch.is_empty() && p.tx.send(SourceEvent::Records(batch)).is_err() {
            return Err("dispatcher stopped".into());
        }
    }
}

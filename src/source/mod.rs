//! Source: the Kafka consumer, on a thread of its own so that it polls
//! continuously (heartbeats, rebalances) whatever the rest of the pipeline
//! does. It decodes each record, tracks its offset, dead-letters bad input
//! directly and hands valid identifiers to the dispatcher as
//! [`SourceEvent`]s, the only link between the consumer thread and the
//! rest. [`backpressure`] pauses every partition while the in-flight budget
//! is spent. Commits advance only to each partition's contiguous watermark
//! (see [`crate::offsets`]); the periodic ones run on a committer thread
//! ([`commit`]).
//!
//! Rebalances ([`rebalance`]): on revoke, records of the revoked
//! partitions get a bounded time to finish, what is safe is committed
//! synchronously, and the rest is forgotten uncommitted (a lost assignment
//! is forgotten at once); on assign, each partition starts a fresh epoch.

mod backpressure;
mod commit;
mod halt;
mod poll_loop;
mod rebalance;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use crate::config::KafkaConfig;
use crate::decode::Decoder;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::{Identifier, InputRecord};
use crate::offsets::OffsetTracker;
use crate::sink::{KafkaSink, SinkError};
use rebalance::SourceContext;

/// Why the consumer thread stopped with an error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be created or subscribed.
    #[error("consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// librdkafka reported a fatal consumer error.
    #[error("fatal consumer error: {0}")]
    Fatal(KafkaError),
    /// A dead letter of undecodable input could not be enqueued.
    #[error(transparent)]
    DeadLetter(#[from] SinkError),
    /// The dispatcher is gone.
    #[error("dispatcher stopped")]
    DispatcherGone,
    /// The consumer thread panicked.
    #[error("consumer thread panicked")]
    Panicked,
}

/// A decoded record on its way to the dispatcher.
#[derive(Debug)]
pub(crate) struct Work {
    /// The record.
    pub(crate) rec: InputRecord,
    /// Its identifier.
    pub(crate) id: Identifier,
}

/// What the consumer thread hands the dispatcher.
#[derive(Debug)]
pub(crate) enum SourceEvent {
    /// Decoded records, in consumption order.
    Records(Vec<Work>),
    /// Partitions were revoked: records of theirs still pending are dropped
    /// (their new owner reads them again), so memory stays bounded.
    Revoked,
    /// Partitions were assigned: their records come next, and are planned
    /// only once the store knows what the store topic holds now (a peer
    /// may have resolved or journaled them meanwhile).
    Assigned,
}

/// Flags the pipeline uses to steer the consumer thread.
#[derive(Debug, Default)]
pub(crate) struct SourceControl {
    /// Stop taking new records (shutdown has begun).
    pub(crate) stop_taking: AtomicBool,
    /// Commit what is safe and leave the group.
    pub(crate) close: AtomicBool,
}

/// Settings of the consumer thread.
pub(crate) struct SourceParts {
    /// Kafka settings.
    pub(crate) cfg: KafkaConfig,
    /// Record decoder.
    pub(crate) decoder: Decoder,
    /// Keep each record's headers (`output.forward_headers`).
    pub(crate) keep_headers: bool,
    /// Shared offset tracker.
    pub(crate) tracker: Arc<Mutex<OffsetTracker>>,
    /// For dead letters of undecodable records.
    pub(crate) sink: Arc<KafkaSink>,
    /// To the dispatcher.
    pub(crate) tx: UnboundedSender<SourceEvent>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Health flags.
    pub(crate) health: Arc<Health>,
    /// Steering flags.
    pub(crate) control: Arc<SourceControl>,
}

/// The consumer's properties: the connector's defaults, then the
/// pass-through map, then what the connector manages.
fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Bounded prefetch: the in-flight budget, not librdkafka's queue,
        // should hold the backlog (librdkafka defaults: 64 MiB, 100000).
        // librdkafka fetches a partition again while it queues fewer than
        // `queued.min.messages`, and one fetch adds up to
        // `max.partition.fetch.bytes` (1 MiB: 12k small events, each also
        // a few hundred bytes of librdkafka's own). Six partitions of that
        // were 34 MiB of a 1M-backlog drain's heap; these bounds keep about
        // 5k records per partition, still 100 ms at the cache-hit rate.
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "2000")
        .set("max.partition.fetch.bytes", "262144")
        // When the application holds (back-pressure), the queue reaches
        // those bounds; librdkafka then postpones the partition's next
        // fetch by this long (default 1000 ms: a second of nothing every
        // cycle on the cache-hit path, 60k records/s instead of 157k).
        .set("fetch.queue.backoff.ms", "20")
        .set("client.id", "identify-connector");
    for (k, v) in &cfg.client_properties(false) {
        cc.set(k, v);
    }
    cc.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if !cfg.instance_id.is_empty() {
        cc.set("group.instance.id", &cfg.instance_id);
    }
    cc
}

/// Creates the consumer (so configuration errors surface at once) and
/// starts its thread and the committer's.
pub(crate) fn spawn(parts: SourceParts) -> Result<JoinHandle<Result<(), SourceError>>, SourceError> {
    let ctx = SourceContext::new(&parts);
    let consumer: BaseConsumer<SourceContext> = consumer_config(&parts.cfg).create_with_context(ctx)?;
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
    let handle = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            let result = poll_loop::run(&consumer, &parts);
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
        .map_err(thread_error)?;
    Ok(handle)
}

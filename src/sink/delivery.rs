//! The producer's callbacks ([`SinkContext`]): an acknowledgement finishes
//! the record's source offset, a delivery failure is [`Fatal`], an output
//! refused for itself goes to the dead-letter topic instead; and the
//! producer's creation (transactional with `kafka.exactly_once`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::local::LocalHistogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::poller::{AfterPoll, PolledProducer};
use super::{per_record, DeliveryFailure, Fatal, Refused, SinkError};
use crate::metrics::Metrics;
use crate::model::{InputRecord, SourcePos, TopicPartition};
use crate::offsets::OffsetTracker;

/// What an acknowledgement completes.
pub(crate) enum Delivery {
    /// A record sent on its own: its acknowledgement finishes `pos`.
    Direct {
        pos: SourcePos,
        timestamp_ms: Option<i64>,
        kind: Kind,
    },
    /// A record sent in a transaction, the staged record at this
    /// position: the transaction's commit finishes it, not the ack.
    Transactional(TopicPartition, i64),
}

pub(super) enum Kind {
    /// An output: if the broker refuses it for itself, `then` goes to the
    /// dead-letter topic instead.
    Output {
        matched: bool,
        then: Box<Refusable>,
    },
    DeadLetter {
        reason: &'static str,
    },
}

/// What a refused output's dead letter needs.
pub(crate) struct Refusable {
    pub(super) rec: InputRecord,
    pub(super) identifier: String,
    pub(super) batch_id: String,
}

/// End-to-end latencies gathered in a local histogram (no shared atomics
/// per record), flushed into the exported one after each producer poll
/// (at most a second apart).
struct LatencyBatch {
    local: LocalHistogram,
}

/// Producer callbacks: acknowledgements finish source offsets.
pub(crate) struct SinkContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    latency: Mutex<LatencyBatch>,
    fatal: Arc<Fatal>,
    /// Staged records the broker refused for themselves in a transaction.
    txn_refused: Mutex<Vec<(TopicPartition, i64, KafkaError)>>,
    /// Records the broker acknowledged (for the stall watch).
    acked: Arc<AtomicU64>,
}

impl SinkContext {
    /// The staged records refused in transactions since the last call.
    pub(super) fn take_txn_refused(&self) -> Vec<(TopicPartition, i64, KafkaError)> {
        std::mem::take(&mut *self.txn_refused.lock().expect("refused"))
    }
}

impl ClientContext for SinkContext {}

impl AfterPoll for SinkContext {
    fn after_poll(&self) {
        // A flush of nothing returns at once.
        self.latency.lock().expect("latency").local.flush();
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        if result.is_ok() {
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
        let (pos, timestamp_ms, kind) = match *d {
            Delivery::Direct {
                pos,
                timestamp_ms,
                kind,
            } => (pos, timestamp_ms, kind),
            Delivery::Transactional(tp, offset) => {
                // A failure fails the transaction's commit; one of the
                // record itself makes it a dead letter for the next one.
                if let Err((e, _)) = result {
                    if per_record(e) {
                        self.txn_refused.lock().expect("refused").push((tp, offset, e.clone()));
                    }
                }
                return;
            }
        };
        match result {
            Ok(_) => {
                self.tracker.lock().expect("tracker").complete(&pos);
                match kind {
                    Kind::Output { matched, .. } => self.metrics.record_produced(matched),
                    Kind::DeadLetter { reason } => self.metrics.dead_lettered(reason),
                }
                if let Some(ts) = timestamp_ms {
                    let now = crate::model::now_ms();
                    if now >= ts {
                        let batch = self.latency.lock().expect("latency");
                        batch.local.observe((now - ts) as f64 / 1000.0);
                    }
                }
            }
            Err((e, _)) if per_record(e) && matches!(kind, Kind::Output { .. }) => {
                let Kind::Output { then, .. } = kind else {
                    unreachable!()
                };
                self.fatal.refuse(Refused {
                    rec: then.rec,
                    identifier: then.identifier,
                    batch_id: then.batch_id,
                    error: e.clone(),
                });
            }
            Err((e, _)) => {
                self.metrics.produce_failed();
                self.fatal.set(SinkError::Delivery(Box::new(DeliveryFailure {
                    topic: pos.topic.to_string(),
                    partition: pos.partition,
                    offset: pos.offset,
                    source: e.clone(),
                })));
            }
        }
    }
}

/// Creates the producer; a transactional one (`transactional.id` set) with
/// its transactions initialised, which fences an earlier producer with the
/// same id.
pub(super) fn create(
    cc: &ClientConfig,
    tracker: &Arc<Mutex<OffsetTracker>>,
    metrics: &Arc<Metrics>,
    fatal: &Arc<Fatal>,
    acked: &Arc<AtomicU64>,
) -> Result<PolledProducer<SinkContext>, SinkError> {
    let context = SinkContext {
        tracker: tracker.clone(),
        metrics: metrics.clone(),
        latency: Mutex::new(LatencyBatch {
            local: metrics.end_to_end_local(),
        }),
        fatal: fatal.clone(),
        txn_refused: Mutex::default(),
        acked: acked.clone(),
    };
    let producer = PolledProducer::new(cc, context, "sink-producer").map_err(SinkError::Config)?;
    if cc.get("transactional.id").is_some() {
        producer
            .inner()
            .init_transactions(Duration::from_secs(30))
            .map_err(SinkError::Transaction)?;
    }
    Ok(producer)
}

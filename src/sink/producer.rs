//! The Kafka producer behind [`KafkaSink`]: idempotent, with a delivery
//! callback that finishes the record's source offset once the broker has
//! acknowledged it, and records a delivery failure as [`Fatal`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::record;
use super::{DeliveryFailure, Fatal, Publish, Resolution, SinkError};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::model::{InputRecord, SourcePos};
use crate::offsets::OffsetTracker;

/// What an acknowledgement completes.
pub(crate) struct Delivery {
    pos: SourcePos,
    timestamp_ms: Option<i64>,
    kind: Kind,
}

enum Kind {
    Output { matched: bool },
    DeadLetter { reason: &'static str },
}

/// Producer callbacks: acknowledgements finish source offsets.
pub(crate) struct SinkContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Box<Delivery>) {
        match result {
            Ok(_) => {
                self.tracker.lock().expect("tracker").complete(&d.pos);
                match d.kind {
                    Kind::Output { matched } => self.metrics.record_produced(matched),
                    Kind::DeadLetter { reason } => self.metrics.dead_lettered(reason),
                }
                if let Some(ts) = d.timestamp_ms {
                    let now = chrono::Utc::now().timestamp_millis();
                    if now >= ts {
                        self.metrics.end_to_end(Duration::from_millis((now - ts) as u64));
                    }
                }
            }
            Err((e, _)) => {
                self.metrics.produce_failed();
                self.fatal.set(SinkError::Delivery(Box::new(DeliveryFailure {
                    topic: d.pos.topic.to_string(),
                    partition: d.pos.partition,
                    offset: d.pos.offset,
                    source: e.clone(),
                })));
            }
        }
    }
}

/// The producer for results and dead letters.
pub(crate) struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    output_topic: String,
    dlq_topic: String,
    /// Largest dead-letter value that fits the producer's `message.max.bytes`.
    dlq_value_limit: usize,
}

type Record<'a> = BaseRecord<'a, [u8], [u8], Box<Delivery>>;

impl KafkaSink {
    /// Creates the idempotent producer.
    pub(crate) fn new(
        cfg: &KafkaConfig,
        tracker: Arc<Mutex<OffsetTracker>>,
        metrics: Arc<Metrics>,
        fatal: Arc<Fatal>,
    ) -> Result<Self, SinkError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("client.id", "identify-connector");
        for (k, v) in &cfg.client_properties(true) {
            cc.set(k, v);
        }
        cc.set("enable.idempotence", "true");
        let message_max = cc
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let producer = cc
            .create_with_context(SinkContext {
                tracker,
                metrics,
                fatal,
            })
            .map_err(SinkError::Config)?;
        Ok(Self {
            producer,
            output_topic: cfg.output_topic.clone(),
            dlq_topic: cfg.dead_letter_topic.clone(),
            dlq_value_limit: record::dead_letter_value_limit(message_max),
        })
    }

    /// Like [`Publish::dead_letter`], for a synchronous caller (the
    /// consumer thread): waits on a full queue by sleeping.
    pub(crate) fn dead_letter_blocking(
        &self,
        rec: &InputRecord,
        reason: &'static str,
        message: &str,
    ) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, reason, message);
        futures::executor::block_on(self.enqueue(record, true))
    }

    fn dead_letter_record<'a>(&'a self, rec: &'a InputRecord, reason: &'static str, message: &str) -> Record<'a> {
        let (headers, value) = record::dead_letter(rec, reason, message, self.dlq_value_limit);
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::DeadLetter { reason },
        });
        let mut out = BaseRecord::with_opaque_to(&self.dlq_topic, delivery).headers(headers);
        if let Some(k) = &rec.key {
            out = out.key(k.as_ref());
        }
        if let Some(v) = value {
            out = out.payload(v);
        }
        out
    }

    /// Hands `record` to librdkafka; a full queue is waited out (sleeping
    /// the thread when `blocking`), any other refusal is an error.
    async fn enqueue(&self, mut record: Record<'_>, blocking: bool) -> Result<(), SinkError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if blocking {
                        std::thread::sleep(Duration::from_millis(5));
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, r)) => {
                    return Err(SinkError::Produce {
                        topic: r.topic.to_string(),
                        source: e,
                    })
                }
            }
        }
    }

    /// Waits until every enqueued record is acknowledged (or `timeout`).
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records not yet acknowledged.
    pub(crate) fn pending(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

impl Publish for KafkaSink {
    async fn output(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<(), SinkError> {
        let value = record::output_value(rec, r);
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::Output { matched: r.matched },
        });
        let record = BaseRecord::with_opaque_to(&self.output_topic, delivery)
            .key(r.identifier.as_bytes())
            .payload(value.as_slice())
            .headers(record::output_headers(rec, r.batch_id));
        self.enqueue(record, false).await
    }

    async fn dead_letter(&self, rec: &InputRecord, reason: &'static str, message: &str) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, reason, message);
        self.enqueue(record, false).await
    }
}

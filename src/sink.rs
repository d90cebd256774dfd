//! Sink: an idempotent Kafka producer for result and dead-letter records.
//! A record's source offset is marked finished only in the delivery
//! callback, i.e. once the broker has acknowledged its output; a delivery
//! failure is fatal to the pipeline (nothing after it is committed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::source::offsets::{OffsetTracker, SourcePos};

/// Errors creating or using the producer.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// librdkafka refused the configuration.
    #[error("producer configuration: {0}")]
    Config(KafkaError),
    /// A record could not be enqueued (not a full queue: that is waited out).
    #[error("produce to {topic}: {source}")]
    Produce {
        /// Target topic.
        topic: String,
        /// Cause.
        source: KafkaError,
    },
}

/// A consumed record, kept until its output is acknowledged (its key and
/// value go to the dead-letter topic if it cannot be resolved).
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Source coordinates.
    pub pos: SourcePos,
    /// Original key.
    pub key: Option<Bytes>,
    /// Original value.
    pub value: Option<Bytes>,
    /// Record timestamp (ms since the epoch), for end-to-end latency.
    pub timestamp_ms: Option<i64>,
}

/// Set when a record could not be delivered; the pipeline stops on it.
#[derive(Debug, Default)]
pub struct Fatal {
    message: Mutex<Option<String>>,
    /// Woken when a fatal error is set.
    pub notify: Notify,
}

impl Fatal {
    /// Records the first fatal error.
    pub fn set(&self, msg: String) {
        let mut m = self.message.lock().expect("fatal");
        if m.is_none() {
            *m = Some(msg);
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
    /// The fatal error, if any.
    pub fn get(&self) -> Option<String> {
        self.message.lock().expect("fatal").clone()
    }
}

/// What an acknowledgement completes.
pub struct Delivery {
    pos: SourcePos,
    timestamp_ms: Option<i64>,
    kind: Kind,
}

enum Kind {
    Output { matched: bool },
    DeadLetter { reason: &'static str },
}

/// Producer callbacks: acknowledgements finish source offsets.
pub struct SinkContext {
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
                self.fatal.set(format!(
                    "Kafka did not acknowledge the output of {}/{}@{}: {e}",
                    d.pos.topic, d.pos.partition, d.pos.offset
                ));
            }
        }
    }
}

/// The producer for results and dead letters.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    output_topic: String,
    dlq_topic: String,
    /// Largest dead-letter value that fits the producer's `message.max.bytes`.
    dlq_value_limit: usize,
}

/// Room kept in a dead-letter record for its key, headers and framing.
const DLQ_OVERHEAD: usize = 64 * 1024;

/// How many bytes of a dead-letter value fit a record of at most
/// `message_max_bytes` (the producer's `message.max.bytes`).
pub fn dead_letter_value_limit(message_max_bytes: usize) -> usize {
    message_max_bytes.saturating_sub(DLQ_OVERHEAD).max(1024)
}

#[derive(Serialize)]
struct SourceRef<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct Output<'a> {
    identifier: &'a str,
    identifier_type: &'a str,
    matched: bool,
    matches: &'a RawValue,
    batch_id: &'a str,
    resolved_at: &'a str,
    source: SourceRef<'a>,
}

/// One result, ready to publish for a record.
pub struct Resolution<'a> {
    /// Normalised identifier (the output key).
    pub identifier: &'a str,
    /// `business_email` or `profile_url`.
    pub identifier_type: &'a str,
    /// The API's matches array, verbatim.
    pub matches: &'a RawValue,
    /// Whether it holds a match.
    pub matched: bool,
    /// The job that resolved it.
    pub batch_id: &'a str,
    /// RFC 3339 time of resolution.
    pub resolved_at: &'a str,
}

fn source_headers(pos: &SourcePos) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: "identify.source.topic",
            value: Some(pos.topic.as_bytes()),
        })
        .insert(Header {
            key: "identify.source.partition",
            value: Some(pos.partition.to_string().as_bytes()),
        })
        .insert(Header {
            key: "identify.source.offset",
            value: Some(pos.offset.to_string().as_bytes()),
        })
}

impl Sink {
    /// Creates the idempotent producer.
    pub fn new(
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
            dlq_value_limit: dead_letter_value_limit(message_max),
        })
    }

    /// Publishes the result record of `rec`.
    pub async fn send_output(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<(), SinkError> {
        let value = serde_json::to_vec(&Output {
            identifier: r.identifier,
            identifier_type: r.identifier_type,
            matched: r.matched,
            matches: r.matches,
            batch_id: r.batch_id,
            resolved_at: r.resolved_at,
            source: SourceRef {
                topic: &rec.pos.topic,
                partition: rec.pos.partition,
                offset: rec.pos.offset,
            },
        })
        .expect("output serializes");
        let headers = source_headers(&rec.pos).insert(Header {
            key: "identify.batch_id",
            value: Some(r.batch_id.as_bytes()),
        });
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::Output { matched: r.matched },
        });
        let record = BaseRecord::with_opaque_to(&self.output_topic, delivery)
            .key(r.identifier.as_bytes())
            .payload(value.as_slice())
            .headers(headers);
        self.enqueue(record, false).await
    }

    /// Publishes `rec` unchanged to the dead-letter topic with its reason.
    pub async fn send_dead_letter(
        &self,
        rec: &InputRecord,
        reason: &'static str,
        message: &str,
    ) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, reason, message);
        self.enqueue(record, false).await
    }

    /// Like [`Sink::send_dead_letter`], for a synchronous caller (the
    /// consumer thread): waits on a full queue by sleeping.
    pub fn send_dead_letter_blocking(
        &self,
        rec: &InputRecord,
        reason: &'static str,
        message: &str,
    ) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, reason, message);
        futures::executor::block_on(self.enqueue(record, true))
    }

    fn dead_letter_record<'a>(
        &'a self,
        rec: &'a InputRecord,
        reason: &'static str,
        message: &str,
    ) -> BaseRecord<'a, [u8], [u8], Box<Delivery>> {
        let message: String = message.chars().take(1000).collect();
        // A value the broker accepted compressed may not fit a record of
        // ours: keep its head and say so, rather than stall the partition.
        let value = rec.value.as_deref();
        let truncated_from = value
            .filter(|v| v.len() > self.dlq_value_limit)
            .map(|v| v.len().to_string());
        let mut headers = source_headers(&rec.pos)
            .insert(Header {
                key: "identify.error.reason",
                value: Some(reason.as_bytes()),
            })
            .insert(Header {
                key: "identify.error.message",
                value: Some(message.as_bytes()),
            });
        if let Some(size) = &truncated_from {
            headers = headers.insert(Header {
                key: "identify.error.value_truncated_from",
                value: Some(size.as_bytes()),
            });
        }
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::DeadLetter { reason },
        });
        let mut record = BaseRecord::with_opaque_to(&self.dlq_topic, delivery).headers(headers);
        if let Some(k) = &rec.key {
            record = record.key(k.as_ref());
        }
        if let Some(v) = value {
            record = record.payload(&v[..v.len().min(self.dlq_value_limit)]);
        }
        record
    }

    async fn enqueue<'a>(
        &self,
        mut record: BaseRecord<'a, [u8], [u8], Box<Delivery>>,
        blocking: bool,
    ) -> Result<(), SinkError>
    where
        'a: 'a,
    {
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
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

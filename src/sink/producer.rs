//! The Kafka producer behind [`KafkaSink`]: idempotent, with a delivery
//! callback that finishes the record's source offset once the broker has
//! acknowledged it, and records a delivery failure as [`Fatal`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use super::poller::PolledProducer;
use super::record::{self, Shape};
use super::{per_record, refused_reason, DeliveryFailure, Failure, Fatal, Publish, Refused, Resolution, SinkError};
use crate::config::{KafkaConfig, OutputConfig};
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
struct Refusable {
    rec: InputRecord,
    identifier: String,
    batch_id: String,
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
                    Kind::Output { matched, .. } => self.metrics.record_produced(matched),
                    Kind::DeadLetter { reason } => self.metrics.dead_lettered(reason),
                }
                if let Some(ts) = d.timestamp_ms {
                    let now = chrono::Utc::now().timestamp_millis();
                    if now >= ts {
                        self.metrics.end_to_end(Duration::from_millis((now - ts) as u64));
                    }
                }
            }
            Err((e, _)) if per_record(e) && matches!(d.kind, Kind::Output { .. }) => {
                let Kind::Output { then, .. } = d.kind else {
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
    producer: PolledProducer<SinkContext>,
    output_topic: String,
    dlq_topic: String,
    /// Largest dead-letter value that fits the producer's `message.max.bytes`.
    dlq_value_limit: usize,
    /// What the records look like.
    shape: Shape,
}

type Record<'a> = BaseRecord<'a, [u8], [u8], Box<Delivery>>;

impl KafkaSink {
    /// Creates the idempotent producer.
    pub(crate) fn new(
        cfg: &KafkaConfig,
        output: &OutputConfig,
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
        let context = SinkContext {
            tracker,
            metrics,
            fatal,
        };
        let producer = PolledProducer::new(&cc, context, "sink-producer").map_err(SinkError::Config)?;
        Ok(Self {
            producer,
            output_topic: cfg.output_topic.clone(),
            dlq_topic: cfg.dead_letter_topic.clone(),
            dlq_value_limit: record::dead_letter_value_limit(message_max),
            shape: Shape::new(output, &cfg.group_id),
        })
    }

    /// Like [`Publish::dead_letter`], for a synchronous caller (the
    /// consumer thread): waits on a full queue by sleeping.
    pub(crate) fn dead_letter_blocking(&self, rec: &InputRecord, f: Failure<'_>) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, f);
        futures::executor::block_on(self.enqueue(record, true))
    }

    fn dead_letter_record<'a>(&'a self, rec: &'a InputRecord, f: Failure<'_>) -> Record<'a> {
        let (headers, value) = record::dead_letter(rec, f, self.dlq_value_limit, &self.shape);
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::DeadLetter { reason: f.reason },
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
        let value = match self.shape.value(rec, r) {
            Ok(v) => v,
            Err(e) => {
                // The decoder checked the input; this is a safety net only.
                let message = e.to_string();
                let f = Failure {
                    reason: "not_enrichable",
                    message: &message,
                    identifier: Some(r.identifier),
                    batch_id: Some(r.batch_id),
                };
                return self.dead_letter(rec, f).await;
            }
        };
        let delivery = Box::new(Delivery {
            pos: rec.pos.clone(),
            timestamp_ms: rec.timestamp_ms,
            kind: Kind::Output {
                matched: r.matched,
                then: Box::new(Refusable {
                    rec: rec.clone(),
                    identifier: r.identifier.to_string(),
                    batch_id: r.batch_id.to_string(),
                }),
            },
        });
        let mut record = BaseRecord::with_opaque_to(&self.output_topic, delivery)
            .payload(value.as_slice())
            .headers(record::output_headers(rec, r.batch_id));
        if let Some(key) = self.shape.key(rec, r.identifier) {
            record = record.key(key);
        }
        match self.enqueue(record, false).await {
            Err(SinkError::Produce { source, .. }) if per_record(&source) => {
                let message = format!("the output ({} bytes) cannot be produced: {source}", value.len());
                let f = Failure {
                    reason: refused_reason(&source),
                    message: &message,
                    identifier: Some(r.identifier),
                    batch_id: Some(r.batch_id),
                };
                self.dead_letter(rec, f).await
            }
            other => other,
        }
    }

    async fn dead_letter(&self, rec: &InputRecord, f: Failure<'_>) -> Result<(), SinkError> {
        let record = self.dead_letter_record(rec, f);
        self.enqueue(record, false).await
    }
}

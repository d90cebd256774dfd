//! The Kafka producer behind [`KafkaSink`]: idempotent, its delivery
//! callback ([`super::delivery`]) finishing the record's source offset once
//! the broker has acknowledged it. With
//! `kafka.exactly_once` the producer is transactional: records are staged
//! ([`super::txn`]) and sent in the transaction that commits their offsets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::ConsumerGroupMetadata;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;
use tracing::warn;

use super::delivery::{create, Delivery, Kind, Refusable, SinkContext};
use super::poller::PolledProducer;
use super::record::{self, Shape};
use super::txn::{self, Stage, Staged};
use super::{per_record, refused_reason, Failure, Fatal, Publish, Resolution, SinkError};
use crate::config::{KafkaConfig, OutputConfig};
use crate::metrics::Metrics;
use crate::model::{InputRecord, TopicPartition};
use crate::offsets::{CommitPoint, OffsetTracker};

/// The producer for results and dead letters.
pub(crate) struct KafkaSink {
    /// Replaced (exactly once) when a transactional error leaves it
    /// unusable without a commit in doubt.
    producer: RwLock<Arc<PolledProducer<SinkContext>>>,
    /// Its configuration, to create a new one.
    client_config: ClientConfig,
    /// The transactional producer must be replaced before the next commit.
    replace_producer: AtomicBool,
    output_topic: String,
    dlq_topic: String,
    /// Largest dead-letter value that fits the producer's `message.max.bytes`.
    dlq_value_limit: usize,
    /// What the records look like.
    shape: Shape,
    /// The records waiting for their transaction (`kafka.exactly_once`).
    stage: Option<Stage>,
    /// The producer's `message.max.bytes`.
    message_max: usize,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<Metrics>,
    fatal: Arc<Fatal>,
    /// Records the broker acknowledged so far (every producer's).
    acked: Arc<AtomicU64>,
}

type Record<'a> = BaseRecord<'a, [u8], [u8], Box<Delivery>>;

impl KafkaSink {
    /// Creates the idempotent producer; with `transactional_id`
    /// (`kafka.exactly_once`) a transactional one, its transactions
    /// initialised (which fences an earlier instance with the same id).
    pub(crate) fn new(
        cfg: &KafkaConfig,
        output: &OutputConfig,
        transactional_id: Option<&str>,
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
        if let Some(id) = transactional_id {
            if cc.get("transaction.timeout.ms").is_none() {
                // Longer than the connector's own retries of a commit
                // (`txn::LONGEST_TRANSACTION`). A crashed instance's open
                // transaction blocks read_committed consumers until then,
                // unless kafka.instance_id lets its successor fence it at once.
                let ms = crate::config::TRANSACTION_TIMEOUT.as_millis().to_string();
                cc.set("transaction.timeout.ms", &ms);
            }
            cc.set("transactional.id", id);
        }
        let message_max = cc
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let acked = Arc::new(AtomicU64::new(0));
        let producer = create(&cc, &tracker, &metrics, &fatal, &acked)?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            client_config: cc,
            replace_producer: AtomicBool::new(false),
            output_topic: cfg.output_topic.clone(),
            dlq_topic: cfg.dead_letter_topic.clone(),
            dlq_value_limit: record::dead_letter_value_limit(message_max),
            shape: Shape::new(output, &cfg.group_id),
            stage: transactional_id.map(|_| Stage::default()),
            acked,
            message_max,
            tracker,
            metrics,
            fatal,
        })
    }

    /// The producer in use.
    fn producer(&self) -> Arc<PolledProducer<SinkContext>> {
        self.producer.read().expect("producer").clone()
    }

    /// Records and bytes staged for a transaction (in-flight budget).
    pub(crate) fn staged(&self) -> (usize, usize) {
        self.stage.as_ref().map_or((0, 0), Stage::totals)
    }

    /// Whether outputs and offsets are committed in transactions.
    pub(crate) fn is_transactional(&self) -> bool {
        self.stage.is_some()
    }

    /// Commits `points` and every staged record below them in one
    /// transaction (`kafka.exactly_once`); a fatal error stops the pipeline.
    pub(crate) fn transact(&self, points: &[CommitPoint], group: &ConsumerGroupMetadata) -> Result<(), KafkaError> {
        let stage = self.stage.as_ref().expect("transactional");
        if self.fatal.get().is_some() {
            // The pipeline is stopping: no transaction after a fatal error.
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fatal));
        }
        let topics = txn::Topics {
            output: &self.output_topic,
            dead_letter: &self.dlq_topic,
        };
        let refuse = |src: &Refusable, e: &KafkaError| {
            let message = format!("the output cannot be produced: {e}");
            let f = Failure {
                reason: refused_reason(e),
                message: &message,
                identifier: Some(&src.identifier),
                batch_id: Some(&src.batch_id),
            };
            self.dead_letter_staged(&src.rec, f)
        };
        if self.replace_producer.load(Ordering::Relaxed) {
            // A new producer with the same transactional id fences the old
            // one and has the coordinator abort its open transaction.
            let fresh = create(
                &self.client_config,
                &self.tracker,
                &self.metrics,
                &self.fatal,
                &self.acked,
            )
            .map_err(|e| match e {
                SinkError::Config(e) | SinkError::Transaction(e) => e,
                _ => KafkaError::ConsumerCommit(RDKafkaErrorCode::Fatal),
            })?;
            *self.producer.write().expect("producer") = Arc::new(fresh);
            stage.fresh_producer();
            self.replace_producer.store(false, Ordering::Relaxed);
            warn!("transactional producer replaced; staged records go in the next transaction");
        }
        let producer = self.producer();
        txn::transact(&producer, stage, topics, points, group, &self.metrics, &refuse).map_err(|e| {
            if e.fatal && e.retry_safe {
                warn!(error = %e.error, "transactional producer unusable, no commit in doubt: replacing it");
                self.replace_producer.store(true, Ordering::Relaxed);
            } else if e.fatal {
                self.fatal.set(SinkError::Transaction(e.error.clone()));
            }
            e.error
        })
    }

    /// Drops what is staged for the revoked partition `tp`.
    pub(crate) fn forget_staged(&self, tp: &TopicPartition) {
        if let Some(stage) = &self.stage {
            stage.forget(tp);
        }
    }

    /// Stages `r` for the record `rec` and counts the record finished,
    /// unless its partition was revoked meanwhile.
    fn stage(&self, stage: &Stage, rec: &InputRecord, r: Staged) {
        let mut t = self.tracker.lock().expect("tracker");
        // Under the tracker's lock: a commit point that passes this record
        // is computed after it is staged. Not for a revoked partition's
        // record, nor one finished before.
        if t.complete(&rec.pos) {
            stage.put((rec.pos.topic.clone(), rec.pos.partition), rec.pos.offset, r);
        }
    }

    /// The dead letter of `rec`, to stage.
    fn dead_letter_staged(&self, rec: &InputRecord, f: Failure<'_>) -> Staged {
        let (headers, value) = record::dead_letter(rec, f, self.dlq_value_limit, &self.shape);
        let len = value.map(<[u8]>::len);
        Staged {
            dead_letter: Some(f.reason),
            matched: false,
            key: rec.key.clone(),
            value: rec.value.as_ref().zip(len).map(|(v, n)| v.slice(..n)),
            headers,
            timestamp_ms: rec.timestamp_ms,
            source: None,
        }
    }

    /// Stages the dead letter of `rec`.
    fn stage_dead_letter(&self, stage: &Stage, rec: &InputRecord, f: Failure<'_>) {
        let r = self.dead_letter_staged(rec, f);
        self.stage(stage, rec, r);
    }

    /// Like [`Publish::dead_letter`], for a synchronous caller (the
    /// consumer thread): waits on a full queue by sleeping.
    pub(crate) fn dead_letter_blocking(&self, rec: &InputRecord, f: Failure<'_>) -> Result<(), SinkError> {
        if let Some(stage) = &self.stage {
            self.stage_dead_letter(stage, rec, f);
            return Ok(());
        }
        let record = self.dead_letter_record(rec, f);
        futures::executor::block_on(self.enqueue(record, true))
    }

    fn dead_letter_record<'a>(&'a self, rec: &'a InputRecord, f: Failure<'_>) -> Record<'a> {
        let (headers, value) = record::dead_letter(rec, f, self.dlq_value_limit, &self.shape);
        let delivery = Box::new(Delivery::Direct {
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
    async fn enqueue(&self, record: Record<'_>, blocking: bool) -> Result<(), SinkError> {
        let producer = self.producer();
        let sent = if blocking {
            producer.send_when_room_blocking(record)
        } else {
            producer.send_when_room(record).await
        };
        sent.map_err(|(e, r)| SinkError::Produce {
            topic: r.topic.to_string(),
            source: e,
        })
    }

    /// Waits until every enqueued record is acknowledged (or `timeout`).
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }

    /// Records not yet acknowledged.
    pub(crate) fn pending(&self) -> i32 {
        self.producer().in_flight_count()
    }

    /// Records the broker acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

impl KafkaSink {
    /// Writes registry output (`output.format` other than `json`).
    pub(crate) fn with_encoder(mut self, encoder: Option<Arc<crate::registry::Encoder>>) -> Self {
        self.shape.encoder = encoder;
        self
    }

    /// The output value of `rec`. In enrich mode with registry output, an
    /// input schema whose evolved schema is no longer in memory (more input
    /// schemas than `schema_registry.max_schemas`) is registered again,
    /// waiting out a registry that cannot answer meanwhile.
    async fn value(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<Vec<u8>, crate::registry::EncodeError> {
        loop {
            match self.shape.value(rec, r) {
                Err(crate::registry::EncodeError::NotReady(id)) => {
                    let encoder = self.shape.encoder.as_ref().expect("only registry output is not ready");
                    if let Err(e) = encoder.evolve(id).await {
                        if !e.systemic() {
                            return Err(crate::registry::EncodeError::Bad(e.to_string()));
                        }
                        tracing::warn!(schema_id = id, error = %e, "cannot register the output schema; trying again in 1 s");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
                other => return other,
            }
        }
    }
}

impl Publish for KafkaSink {
    async fn output(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<(), SinkError> {
        let value = match self.value(rec, r).await {
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
        if let Some(stage) = &self.stage {
            let key = self.shape.key(rec, r.identifier);
            let headers = record::output_headers(rec, r.batch_id, r.traceparent);
            // With the record's framing; inside the transaction a refusal
            // would fail the commit (it is handled, but costs one).
            let size = value.len() + key.map_or(0, <[u8]>::len) + txn::headers_bytes(&headers) + 512;
            if size > self.message_max {
                // Produced inside the transaction, it would fail the commit.
                let message = format!(
                    "the output ({size} bytes) is larger than the producer's message.max.bytes ({})",
                    self.message_max
                );
                let f = Failure {
                    reason: "output_too_large",
                    message: &message,
                    identifier: Some(r.identifier),
                    batch_id: Some(r.batch_id),
                };
                self.stage_dead_letter(stage, rec, f);
                return Ok(());
            }
            let staged = Staged {
                dead_letter: None,
                matched: r.matched,
                key: key.map(Bytes::copy_from_slice),
                value: Some(Bytes::from(value)),
                headers,
                timestamp_ms: rec.timestamp_ms,
                source: Some(Box::new(Refusable {
                    rec: rec.clone(),
                    identifier: r.identifier.to_string(),
                    batch_id: r.batch_id.to_string(),
                })),
            };
            self.stage(stage, rec, staged);
            return Ok(());
        }
        let delivery = Box::new(Delivery::Direct {
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
            .headers(record::output_headers(rec, r.batch_id, r.traceparent));
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
        if let Some(stage) = &self.stage {
            self.stage_dead_letter(stage, rec, f);
            return Ok(());
        }
        let record = self.dead_letter_record(rec, f);
        self.enqueue(record, false).await
    }
}

//! Writing to the store topic: one producer for results, journal records
//! and member heartbeats. A write the dispatcher or a job depends on is
//! acknowledged by Kafka before it counts; a refused write is retried,
//! never counted as done: a journal record before a submit leaves (the
//! submit waits), a job's results before the job is closed.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::sink::{per_record, AfterPoll, PolledProducer, Record};

/// Where Kafka put an acknowledged record: (partition, offset).
pub(crate) type Written = (i32, i64);

/// Kafka's acknowledgement of one store write.
pub(crate) type Ack = oneshot::Receiver<KafkaResult<Written>>;

/// Delivery reports of store writes go to whoever waits for them; the
/// acknowledged ones are counted (for the stall watch).
#[derive(Default)]
pub(crate) struct StoreContext {
    pub(super) acked: std::sync::atomic::AtomicU64,
}

impl ClientContext for StoreContext {}

impl AfterPoll for StoreContext {}

impl ProducerContext for StoreContext {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<Written>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        if result.is_ok() {
            self.acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = ack.send(
            result
                .as_ref()
                .map(|m| (m.partition(), m.offset()))
                .map_err(|(e, _)| e.clone()),
        );
    }
}

/// How long one acknowledgement is waited for before the write is tried again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// First and longest pause between two tries of a refused write.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// The store's producer.
pub(crate) struct Writer {
    pub(super) producer: PolledProducer<StoreContext>,
    pub(super) topic: String,
}

impl Writer {
    fn record<'a>(&'a self, key: &'a str, value: Option<&'a [u8]>) -> (Record<'a, StoreContext>, Ack) {
        let (tx, rx) = oneshot::channel();
        let mut rec = BaseRecord::with_opaque_to(&self.topic, Box::new(tx)).key(key.as_bytes());
        if super::record::is_budget_key(key) {
            // One partition: its order decides which reservations fit.
            rec = rec.partition(0);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        (rec, rx)
    }

    /// Hands one record (`None`: a tombstone) to librdkafka at once; its
    /// ack arrives on the receiver. For writes a later one supersedes
    /// (heartbeats).
    pub(crate) fn send_now(&self, key: &str, value: Option<&[u8]>) -> KafkaResult<Ack> {
        let (rec, ack) = self.record(key, value);
        self.producer.send(rec).map(|()| ack).map_err(|(e, _)| e)
    }

    /// Hands one record to librdkafka, waiting out a full queue.
    pub(crate) async fn send(&self, key: &str, value: Option<&[u8]>) -> KafkaResult<Ack> {
        let (rec, ack) = self.record(key, value);
        self.producer
            .send_when_room(rec)
            .await
            .map(|()| ack)
            .map_err(|(e, _)| e)
    }

    /// Sends one record and waits (at most [`ACK_WAIT`]) until Kafka has it.
    pub(crate) async fn send_acked(&self, key: &str, value: Option<&[u8]>) -> KafkaResult<Written> {
        let ack = self.send(key, value).await?;
        match tokio::time::timeout(ACK_WAIT, ack).await {
            Ok(Ok(r)) => r,
            _ => Err(KafkaError::Canceled),
        }
    }

    /// Writes one record until Kafka acknowledges it, pausing between
    /// tries (the caller waits: nothing that depends on it goes on).
    /// `what` names it in the one log line a refusal gets.
    pub(crate) async fn write(&self, key: &str, value: Option<&[u8]>, metrics: &Metrics, what: &str) -> Written {
        let mut pause = FIRST_PAUSE;
        let mut failures = 0u32;
        loop {
            match self.send_acked(key, value).await {
                Ok(w) => {
                    if failures > 0 {
                        info!(what, failures, "the store topic takes writes again");
                    }
                    return w;
                }
                Err(e) => {
                    metrics.store_write_failed_by(1);
                    if failures == 0 {
                        warn!(what, error = %e, "the store topic refuses a write; retrying until it takes it");
                    }
                    failures += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }

    /// Writes every record until Kafka acknowledged each: a full queue is
    /// waited on, a refused write is tried again. A record Kafka refuses
    /// for itself (larger than the topic allows) can never be stored: it
    /// is logged, counted and left out. Returns how many were left out.
    pub(crate) async fn write_all(&self, mut todo: Vec<(String, Vec<u8>)>, metrics: &Metrics) -> usize {
        let mut pause = FIRST_PAUSE;
        let mut dropped = 0;
        let mut rounds = 0u32;
        while !todo.is_empty() {
            let mut acks = Vec::with_capacity(todo.len());
            for (i, (key, value)) in todo.iter().enumerate() {
                failpoint!("store.write_halfway", i == todo.len() / 2);
                acks.push(self.send(key, Some(value)).await);
            }
            let waited = join_all(acks.into_iter().map(|a| async move {
                match a {
                    Ok(ack) => match tokio::time::timeout(ACK_WAIT, ack).await {
                        Ok(Ok(r)) => r.map(|_| ()),
                        _ => Err(KafkaError::Canceled),
                    },
                    Err(e) => Err(e),
                }
            }))
            .await;
            let mut again = Vec::new();
            let mut first_error = None;
            for (rec, result) in todo.into_iter().zip(waited) {
                match result {
                    Ok(()) => {}
                    Err(e) if per_record(&e) => {
                        error!(key = %rec.0, error = %e, "a result the store topic refuses for itself is not stored");
                        dropped += 1;
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        again.push(rec);
                    }
                }
            }
            if !again.is_empty() {
                metrics.store_write_failed_by(again.len());
                if rounds == 0 {
                    warn!(
                        failed = again.len(),
                        error = %first_error.expect("an error"),
                        "store writes refused; retrying until they are taken (the job stays open meanwhile)"
                    );
                }
                rounds += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            todo = again;
        }
        if dropped > 0 {
            metrics.store_write_failed_by(dropped);
        }
        dropped
    }
}

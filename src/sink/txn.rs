//! Exactly-once output (`kafka.exactly_once`): outputs and dead letters are
//! staged here instead of being sent, and the input record counts as
//! finished once staged. Because jobs finish out of order, a staged record
//! waits until its partition's contiguous watermark (the safe offset the
//! tracker computes) passes it; then, at every commit (each
//! `kafka.commit_interval`, on revoke and at shutdown), everything below
//! the watermark is produced and the offsets (with their job metadata) are
//! sent in one Kafka transaction. A `read_committed` consumer sees an
//! output exactly when its input's offset is committed.
//!
//! Staged records count against the in-flight budget, so memory stays
//! within it. A transaction that fails is aborted and its records stay
//! staged for the next commit; a fatal error (a fenced producer) stops the
//! pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rustc_hash::FxHashMap;

use super::delivery::{Delivery, Refusable, SinkContext};
use super::per_record;
use super::poller::PolledProducer;
use crate::metrics::Metrics;
use crate::model::TopicPartition;
use crate::offsets::{commit_list, CommitPoint};

/// How long one transaction step (offsets, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// A record waiting for its transaction.
pub(crate) struct Staged {
    /// To the dead-letter topic (else the output topic).
    pub(crate) dead_letter: Option<&'static str>,
    /// Output: whether it holds a match (metrics).
    pub(crate) matched: bool,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: OwnedHeaders,
    /// The input record's timestamp (end-to-end latency).
    pub(crate) timestamp_ms: Option<i64>,
    /// An output's input record, identifier and job: its dead letter if
    /// Kafka refuses the output for itself.
    pub(crate) source: Option<Box<Refusable>>,
}

impl Staged {
    fn bytes(&self) -> usize {
        let input = self.source.as_ref().map_or(0, |s| {
            s.rec.key.as_ref().map_or(0, Bytes::len) + s.rec.value.as_ref().map_or(0, Bytes::len)
        });
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers_bytes(&self.headers)
            + input
    }
}

/// Bytes of header names and values.
pub(crate) fn headers_bytes(h: &OwnedHeaders) -> usize {
    h.iter().map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len)).sum()
}

/// Makes the dead letter of an output Kafka refused for itself.
pub(crate) type Refuse<'a> = &'a dyn Fn(&Refusable, &KafkaError) -> Staged;

#[derive(Default)]
struct Inner {
    parts: FxHashMap<TopicPartition, BTreeMap<i64, Staged>>,
    records: usize,
    bytes: usize,
}

/// The staged records, by input partition and offset.
#[derive(Default)]
pub(crate) struct Stage(Mutex<Inner>, Unfinished);

/// A transaction whose abort did not go through (the broker unreachable):
/// it is aborted before the next one begins.
#[derive(Default)]
struct Unfinished(AtomicBool);

impl Stage {
    /// Stages `r`, the output of the record at `tp`/`offset`.
    pub(crate) fn put(&self, tp: TopicPartition, offset: i64, r: Staged) {
        let mut s = self.0.lock().expect("stage");
        s.records += 1;
        s.bytes += r.bytes();
        if let Some(old) = s.parts.entry(tp).or_default().insert(offset, r) {
            s.records -= 1;
            s.bytes -= old.bytes();
        }
    }

    /// Records and bytes staged (part of the in-flight budget).
    pub(crate) fn totals(&self) -> (usize, usize) {
        let s = self.0.lock().expect("stage");
        (s.records, s.bytes)
    }

    /// Drops what is staged for `tp` (revoked: the next owner reads those
    /// records again, and nothing of them was committed).
    pub(crate) fn forget(&self, tp: &TopicPartition) {
        let mut s = self.0.lock().expect("stage");
        if let Some(part) = s.parts.remove(tp) {
            s.records -= part.len();
            s.bytes -= part.values().map(Staged::bytes).sum::<usize>();
        }
    }

    /// Replaces the staged output at `tp`/`offset` with its dead letter.
    fn replace(&self, tp: &TopicPartition, offset: i64, r: Staged) {
        let mut s = self.0.lock().expect("stage");
        let new = r.bytes();
        if let Some(old) = s.parts.get_mut(tp).and_then(|p| p.insert(offset, r)) {
            s.bytes = s.bytes + new - old.bytes();
        }
    }

    /// Turns the staged outputs the broker refused in the last transaction
    /// into their dead letters.
    fn refused(&self, refused: Vec<(TopicPartition, i64, KafkaError)>, refuse: Refuse<'_>) {
        for (tp, offset, e) in refused {
            let dead = {
                let s = self.0.lock().expect("stage");
                let source = s
                    .parts
                    .get(&tp)
                    .and_then(|p| p.get(&offset))
                    .and_then(|r| r.source.as_deref());
                source.map(|src| refuse(src, &e))
            };
            if let Some(dead) = dead {
                self.replace(&tp, offset, dead);
            }
        }
    }

    /// A new producer took over: nothing of the old one is left to abort.
    pub(crate) fn fresh_producer(&self) {
        self.1 .0.store(false, Ordering::Relaxed);
    }

    /// Removes what is below each point's offset (committed).
    fn remove_below(&self, points: &[CommitPoint]) -> Vec<Staged> {
        let mut s = self.0.lock().expect("stage");
        let mut out = Vec::new();
        for p in points {
            let Some(part) = s.parts.get_mut(&p.tp) else {
                continue;
            };
            let rest = part.split_off(&p.offset);
            out.extend(std::mem::replace(part, rest).into_values());
        }
        s.records -= out.len();
        s.bytes -= out.iter().map(Staged::bytes).sum::<usize>();
        s.parts.retain(|_, part| !part.is_empty());
        out
    }
}

/// Where staged records go.
pub(crate) struct Topics<'a> {
    pub(crate) output: &'a str,
    pub(crate) dead_letter: &'a str,
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) struct TxnError {
    /// The last error.
    pub(crate) error: KafkaError,
    /// The producer cannot go on (fenced, another fatal state, or a commit
    /// whose outcome stayed unknown).
    pub(crate) fatal: bool,
    /// Nothing of this transaction can have been committed, and no other
    /// live producer has this id: a new producer may send the same records.
    pub(crate) retry_safe: bool,
}

impl From<KafkaError> for TxnError {
    /// An error before the commit was asked for.
    fn from(error: KafkaError) -> Self {
        let fatal = is_fatal(&error);
        let retry_safe = !is_fenced(&error);
        Self {
            error,
            fatal,
            retry_safe,
        }
    }
}

/// How often a commit whose outcome is unknown (a time-out) is retried.
const COMMIT_ATTEMPTS: usize = 4;

/// Commits `points` in one transaction with every staged record below
/// them. On failure the transaction is aborted and the records stay staged.
pub(crate) fn transact(
    producer: &PolledProducer<SinkContext>,
    stage: &Stage,
    topics: Topics<'_>,
    points: &[CommitPoint],
    group: &ConsumerGroupMetadata,
    metrics: &Metrics,
    refuse: Refuse<'_>,
) -> Result<(), TxnError> {
    let p = producer.inner();
    let unfinished = &stage.1 .0;
    if unfinished.load(Ordering::Relaxed) {
        abort(producer)?;
        unfinished.store(false, Ordering::Relaxed);
    }
    p.begin_transaction()?;
    let sent = produce_staged(producer, stage, &topics, points, refuse)
        .and_then(|()| p.send_offsets_to_transaction(&commit_list(points), group, TXN_TIMEOUT));
    if let Err(e) = sent {
        if !is_fatal(&e) && abort(producer).is_err() {
            unfinished.store(true, Ordering::Relaxed);
        }
        stage.refused(p.context().take_txn_refused(), refuse);
        return Err(e.into());
    }
    // A commit that timed out may still go through: it is retried, never
    // aborted, so that its records are not sent a second time.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match p.commit_transaction(TXN_TIMEOUT) {
            Ok(()) => break,
            Err(e) if is_retriable(&e) && attempt < COMMIT_ATTEMPTS => continue,
            // Its outcome stays unknown: its records must not go out again.
            Err(e) if is_retriable(&e) => {
                return Err(TxnError {
                    error: e,
                    fatal: true,
                    retry_safe: false,
                })
            }
            Err(e) => {
                // Abortable: nothing was committed. Fatal: unknown.
                let fatal = is_fatal(&e);
                if !fatal && abort(producer).is_err() {
                    unfinished.store(true, Ordering::Relaxed);
                }
                // An output the broker refused for itself fails the whole
                // transaction: it goes as its dead letter next time.
                stage.refused(p.context().take_txn_refused(), refuse);
                return Err(TxnError {
                    error: e,
                    fatal,
                    retry_safe: !fatal,
                });
            }
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let e2e = metrics.end_to_end_local();
    for r in stage.remove_below(points) {
        match r.dead_letter {
            Some(reason) => metrics.dead_lettered(reason),
            None => metrics.record_produced(r.matched),
        }
        if let Some(ts) = r.timestamp_ms.filter(|ts| now >= *ts) {
            e2e.observe((now - ts) as f64 / 1000.0);
        }
    }
    e2e.flush();
    Ok(())
}

/// Hands every staged record below `points` to the producer (inside the
/// open transaction). An output the producer refuses for itself (too large)
/// is replaced by its dead letter on the spot.
fn produce_staged(
    producer: &PolledProducer<SinkContext>,
    stage: &Stage,
    topics: &Topics<'_>,
    points: &[CommitPoint],
    refuse: Refuse<'_>,
) -> Result<(), KafkaError> {
    let mut replaced = Vec::new();
    {
        let s = stage.0.lock().expect("stage");
        for point in points {
            let Some(part) = s.parts.get(&point.tp) else {
                continue;
            };
            for (offset, r) in part.range(..point.offset) {
                let at = (point.tp.clone(), *offset);
                match send(producer, topics, r, at.clone()) {
                    Ok(()) => {}
                    Err(e) if per_record(&e) && r.source.is_some() => {
                        let dead = refuse(r.source.as_deref().expect("checked"), &e);
                        send(producer, topics, &dead, at.clone())?;
                        replaced.push((at, dead));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    for ((tp, offset), dead) in replaced {
        stage.replace(&tp, offset, dead);
    }
    Ok(())
}

/// Sends one staged record, waiting out a full queue.
fn send(
    producer: &PolledProducer<SinkContext>,
    topics: &Topics<'_>,
    r: &Staged,
    at: (TopicPartition, i64),
) -> Result<(), KafkaError> {
    let topic = if r.dead_letter.is_some() {
        topics.dead_letter
    } else {
        topics.output
    };
    let mut record: BaseRecord<'_, [u8], [u8], Box<Delivery>> =
        BaseRecord::with_opaque_to(topic, Box::new(Delivery::Transactional(at.0, at.1))).headers(r.headers.clone());
    if let Some(k) = &r.key {
        record = record.key(k.as_ref());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_ref());
    }
    producer.send_when_room_blocking(record).map_err(|(e, _)| e)
}

/// Aborts the open transaction, retrying while the broker times out.
fn abort(producer: &PolledProducer<SinkContext>) -> Result<(), KafkaError> {
    for _ in 0..3 {
        match producer.inner().abort_transaction(TXN_TIMEOUT) {
            Err(e) if is_retriable(&e) => continue,
            other => return other,
        }
    }
    producer.inner().abort_transaction(TXN_TIMEOUT)
}

/// Whether another live producer took over this transactional id.
fn is_fenced(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{Fenced, ProducerFenced};
    matches!(e, KafkaError::Transaction(t) if matches!(t.code(), Fenced | ProducerFenced))
}

/// Whether the same transaction step may simply be called again.
fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

/// Whether a transaction error leaves the producer unusable (fenced by a
/// newer instance with the same transactional id, or another fatal state).
pub(crate) fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn staged(n: usize) -> Staged {
        Staged {
            dead_letter: None,
            matched: true,
            key: None,
            value: Some(Bytes::from(vec![b'x'; n])),
            headers: OwnedHeaders::new(),
            timestamp_ms: None,
            source: None,
        }
    }

    #[test]
    fn the_broker_never_aborts_a_transaction_the_connector_still_commits() {
        // transaction.timeout.ms was 10 s while a commit was retried for up
        // to 4 x 30 s after 30 s of offsets. The longest a transaction
        // stays open: its offsets, then every commit attempt.
        let longest = TXN_TIMEOUT * (1 + COMMIT_ATTEMPTS as u32);
        assert_eq!(longest, crate::config::TRANSACTION_MIN, "what the configuration checks");
        assert!(crate::config::TRANSACTION_TIMEOUT > longest);
    }

    #[test]
    fn only_what_is_below_the_watermark_leaves_the_stage() {
        let tp: TopicPartition = (Arc::from("in"), 0);
        let other: TopicPartition = (Arc::from("in"), 1);
        let s = Stage::default();
        for off in [5, 1, 3, 2] {
            s.put(tp.clone(), off, staged(10));
        }
        s.put(other.clone(), 7, staged(4));
        assert_eq!(s.totals(), (5, 44));
        let point = |tp: &TopicPartition, offset| CommitPoint { tp: tp.clone(), offset };
        let out = s.remove_below(&[point(&tp, 4)]);
        assert_eq!(out.len(), 3, "offsets 1, 2 and 3");
        assert_eq!(s.totals(), (2, 14), "offset 5 waits, the other partition too");
        s.forget(&other);
        assert_eq!(s.totals(), (1, 10));
        assert!(s.remove_below(&[point(&tp, 5)]).is_empty(), "5 is not below 5");
        assert_eq!(s.remove_below(&[point(&tp, 6)]).len(), 1);
        assert_eq!(s.totals(), (0, 0));
    }
}

//! The consumer thread's loop: apply back-pressure, offer commits, report
//! the lag in seconds, poll a batch of records, convert each one (track its
//! offset, decode it, dead-letter bad input) and hand the batch to the
//! dispatcher.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tracing::{debug, error, warn};

use super::backpressure::{batch_room, commit_due, Action, Budget, Gate};
use super::halt::RegistryHalt;
use super::rebalance::SourceContext;
use super::{SourceError, SourceEvent, SourceParts, Work};
use crate::decode::DecodeError;
use crate::model::{now_ms, InputRecord};
use crate::sink::Failure;
use crate::telemetry;

/// How long a poll waits for the first record.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long a poll waits while paused, before the budget is looked at again.
const PAUSED_WAIT: Duration = Duration::from_millis(20);
/// How long a hold waits before the budget is looked at again.
const HOLD_WAIT: Duration = Duration::from_millis(2);
/// How often the lag in seconds is updated.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Polls until the pipeline asks the consumer to close (`Ok`) or a fatal
/// error; commits are handed to the committer thread.
pub(super) fn run(consumer: &BaseConsumer<SourceContext>, p: &SourceParts) -> Result<(), SourceError> {
    let mut topics = TopicNames::default();
    let mut gate = Gate::default();
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut halt: Option<RegistryHalt> = None;
    let budget = Budget {
        records: p.cfg.max_in_flight,
        bytes: p.cfg.max_in_flight_bytes,
    };
    loop {
        if p.control.close.load(Ordering::Relaxed) {
            return Ok(());
        }
        let stop = p.control.stop_taking.load(Ordering::Relaxed);
        let (in_flight, bytes) = {
            let t = p.tracker.lock().expect("tracker");
            (t.in_flight(), t.in_flight_bytes())
        };
        // Staged for a transaction (kafka.exactly_once): still held here.
        let (staged, staged_bytes) = p.sink.staged();
        let (in_flight, bytes) = (in_flight + staged, bytes + staged_bytes);
        p.metrics.set_in_flight(in_flight);
        let assignments = consumer.context().assignments();
        let action = if halt.is_some() {
            Action::Keep
        } else {
            gate.decide(in_flight, bytes, budget, stop, assignments, Instant::now())
        };
        if halt.is_none() {
            apply(consumer, p, &mut gate, action, assignments);
        }
        if commit_due(
            last_commit.elapsed(),
            p.cfg.commit_interval,
            (staged, staged_bytes),
            budget,
        ) {
            offer_commits(consumer, p);
            last_commit = Instant::now();
        }
        if last_lag.elapsed() >= LAG_EVERY {
            report_lag(p);
            last_lag = Instant::now();
        }
        if let Some(h) = &mut halt {
            if h.turn(consumer, p)? {
                halt = None;
                gate.resumed(assignments);
            }
            continue;
        }
        if action == Action::Hold {
            // Bounded: PAUSE_AFTER turns a long hold into a pause.
            std::thread::sleep(HOLD_WAIT);
            continue;
        }
        // While paused, only events arrive: look at the budget again soon.
        let wait = if gate.is_paused() { PAUSED_WAIT } else { POLL_WAIT };
        let (batch, halted) = poll_batch(consumer, p, &mut topics, batch_room(in_flight, budget), stop, wait)?;
        halt = halted;
        if !batch.is_empty() && p.tx.send(SourceEvent::Records(batch)).is_err() {
            return Err(SourceError::DispatcherGone);
        }
    }
}

/// Pauses or resumes the whole assignment.
fn apply(consumer: &BaseConsumer<SourceContext>, p: &SourceParts, gate: &mut Gate, action: Action, assignments: u64) {
    if action == Action::Keep {
        gate.released();
        return;
    }
    if action == Action::Hold {
        gate.held(Instant::now());
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    match action {
        Action::Pause => {
            if consumer.pause(&assignment).is_ok() {
                if !gate.is_paused() {
                    debug!("in-flight budget reached; partitions paused");
                }
                gate.paused();
                p.metrics.set_paused_partitions(assignment.count());
            }
        }
        Action::Resume => {
            if consumer.resume(&assignment).is_ok() {
                debug!("partitions resumed");
                gate.resumed(assignments);
                p.metrics.set_paused_partitions(0);
            }
        }
        Action::Keep | Action::Hold => {}
    }
}

/// Offers every partition whose safe offset (or job list) moved to the
/// committer thread.
fn offer_commits(consumer: &BaseConsumer<SourceContext>, p: &SourceParts) {
    let points = p.tracker.lock().expect("tracker").commit_candidates();
    if !points.is_empty() {
        consumer.context().commits.offer(points);
    }
}

/// Each partition's lag in seconds: the age of its oldest record not yet
/// committed (0 when every record consumed is).
fn report_lag(p: &SourceParts) {
    let oldest = p.tracker.lock().expect("tracker").oldest_uncommitted();
    let now = now_ms();
    for ((topic, partition), ts) in oldest {
        let age = ts.map_or(0, |ts| (now - ts).max(0));
        p.metrics.set_lag_seconds(&topic, partition, age as f64 / 1000.0);
    }
}

/// The record's W3C `traceparent` header, if it has one.
fn traceparent(msg: &BorrowedMessage<'_>) -> Option<Box<str>> {
    let headers = msg.headers()?;
    let h = headers.iter().find(|h| h.key.eq_ignore_ascii_case("traceparent"))?;
    std::str::from_utf8(h.value?).ok().map(Box::from)
}

/// Interned topic names: one `Arc<str>` per topic, not one per record.
#[derive(Default)]
struct TopicNames(HashMap<String, Arc<str>>);

impl TopicNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.0.get(name) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(name);
        self.0.insert(name.to_string(), t.clone());
        t
    }
}

/// Takes what is ready, up to `room` records, waiting at most `wait` for
/// the first; every record is converted on the way. A record whose schema
/// the registry cannot give ends the batch and starts a halt.
fn poll_batch(
    consumer: &BaseConsumer<SourceContext>,
    p: &SourceParts,
    topics: &mut TopicNames,
    room: usize,
    stop: bool,
    mut wait: Duration,
) -> Result<(Vec<Work>, Option<RegistryHalt>), SourceError> {
    let mut batch = Vec::with_capacity(room.min(64));
    let mut consumed = 0;
    while batch.len() < room {
        let msg = match consumer.poll(wait) {
            None => break,
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                error!(error = %e, "fatal consumer error");
                return Err(SourceError::Fatal(e));
            }
            Some(Err(e)) => {
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
        match convert(p, topics, &msg, &mut consumed)? {
            Converted::Work(work) => batch.push(work),
            Converted::Skipped => {}
            Converted::Halt(id, e) => {
                let halt = RegistryHalt::start(consumer, p, &msg, id, &e)?;
                p.metrics.records_consumed(consumed);
                return Ok((batch, Some(halt)));
            }
        }
    }
    p.metrics.records_consumed(consumed);
    Ok((batch, None))
}

/// What became of a polled record.
enum Converted {
    /// To the dispatcher.
    Work(Work),
    /// Dead-lettered, or of a partition not assigned.
    Skipped,
    /// Not taken: the registry cannot give schema `id` (not tracked).
    Halt(u32, crate::registry::RegistryError),
}

/// Decodes the record and tracks its offset (counting it in `consumed`);
/// bad input is dead-lettered here. A record the registry cannot decode
/// now is not tracked at all.
fn convert(
    p: &SourceParts,
    topics: &mut TopicNames,
    msg: &BorrowedMessage<'_>,
    consumed: &mut u64,
) -> Result<Converted, SourceError> {
    let topic = topics.get(msg.topic());
    let decoded = match p.decoder.decode(msg.payload()) {
        Err(DecodeError::RegistryDown(e)) => {
            // Of a partition no longer assigned here: the next owner reads it.
            let tp = (topic, msg.partition());
            if !p.tracker.lock().expect("tracker").is_assigned(&tp) {
                return Ok(Converted::Skipped);
            }
            let id = msg
                .payload()
                .and_then(|v| crate::registry::split(v).ok())
                .map_or(0, |(id, _)| id);
            return Ok(Converted::Halt(id, e));
        }
        other => other,
    };
    let value = msg.payload().map(Bytes::copy_from_slice);
    let headers = msg.headers().filter(|_| p.keep_headers);
    let header_bytes: usize = headers.map_or(0, |h| {
        h.iter().map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len)).sum()
    });
    let size = value.as_ref().map_or(0, |v| v.len()) + msg.key().map_or(0, |k| k.len()) + header_bytes;
    let timestamp_ms = msg.timestamp().to_millis();
    let tracked = p.tracker.lock().expect("tracker").track_consumed(
        &topic,
        msg.partition(),
        msg.offset(),
        size,
        timestamp_ms.unwrap_or_else(now_ms),
    );
    let Some(pos) = tracked else {
        return Ok(Converted::Skipped);
    };
    *consumed += 1;
    let rec = InputRecord {
        pos,
        key: msg.key().map(Bytes::copy_from_slice),
        value,
        headers: headers.map(|h| h.detach()),
        timestamp_ms,
        traceparent: telemetry::enabled().then(|| traceparent(msg)).flatten(),
    };
    match decoded {
        Ok(id) => Ok(Converted::Work(Work { rec, id })),
        Err(e) => {
            let message = e.to_string();
            let f = Failure {
                reason: e.reason(),
                message: &message,
                identifier: None,
                batch_id: None,
            };
            p.sink.dead_letter_blocking(&rec, f)?;
            Ok(Converted::Skipped)
        }
    }
}

//! Halt for the schema registry: a record whose schema cannot be fetched
//! because the registry cannot answer (or, in enrich mode, whose output
//! schema the registry refuses) is nobody's fault, so it is never
//! dead-lettered. The consumer seeks its partition back to it (it was not
//! tracked, so nothing after it is committed), pauses the assignment,
//! reports it (`/readyz` 503, `identify_registry_halted`, one log line)
//! and asks the registry again with backoff; any record polled meanwhile
//! is put back the same way. When the registry answers, the assignment
//! resumes and the record is read again.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tracing::{error, info};

use super::rebalance::SourceContext;
use super::{SourceError, SourceParts};
use crate::registry::RegistryError;

/// First wait before asking the registry again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one poll waits while halted.
const HALTED_WAIT: Duration = Duration::from_millis(100);

/// Records are not taken until the registry answers for schema `id`.
#[derive(Debug)]
pub(super) struct RegistryHalt {
    id: u32,
    since: Instant,
    next_try: Instant,
    backoff: Duration,
}

/// Puts `msg` back: its partition's next read starts at it again.
fn put_back(consumer: &BaseConsumer<SourceContext>, msg: &BorrowedMessage<'_>) -> Result<(), SourceError> {
    consumer
        .seek(msg.topic(), msg.partition(), Offset::Offset(msg.offset()), Duration::from_secs(10))
        .map_err(|e| {
            error!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e,
                "cannot put a record back while the schema registry is down; stopping (nothing after it was committed)");
            SourceError::Fatal(e)
        })
}

fn pause_all(consumer: &BaseConsumer<SourceContext>) {
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
}

impl RegistryHalt {
    /// Starts a halt at `msg`, whose schema `id` the registry could not give.
    pub(super) fn start(
        consumer: &BaseConsumer<SourceContext>,
        p: &SourceParts,
        msg: &BorrowedMessage<'_>,
        id: u32,
        e: &RegistryError,
    ) -> Result<Self, SourceError> {
        put_back(consumer, msg)?;
        pause_all(consumer);
        error!(schema_id = id, error = %e,
            "the schema registry cannot serve this record's schema; taking no records (nothing is dead-lettered) until it does");
        p.health.set_registry(Some(e.to_string()));
        p.metrics.set_registry_halted(true);
        Ok(Self {
            id,
            since: Instant::now(),
            next_try: Instant::now() + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF,
        })
    }

    /// One turn while halted: keeps the assignment paused, puts back what
    /// a poll still returns, and asks the registry again when due.
    /// Returns true when it answered (the halt is over, the assignment
    /// resumed).
    pub(super) fn turn(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        p: &SourceParts,
    ) -> Result<bool, SourceError> {
        // Partitions assigned meanwhile are paused too.
        pause_all(consumer);
        if let Some(Ok(msg)) = consumer.poll(HALTED_WAIT) {
            // Not of a partition revoked meanwhile: its next owner reads it.
            let tp = (std::sync::Arc::from(msg.topic()), msg.partition());
            if p.tracker.lock().expect("tracker").is_assigned(&tp) {
                put_back(consumer, &msg)?;
            }
        }
        if Instant::now() < self.next_try {
            return Ok(false);
        }
        match p.decoder.ready(self.id) {
            Err(e) if e.systemic() => {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.next_try = Instant::now() + self.backoff;
                p.health.set_registry(Some(e.to_string()));
                Ok(false)
            }
            // An answer, even "unknown id": the record is read again and
            // goes where it belongs.
            _ => {
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.resume(&assignment);
                }
                info!(
                    schema_id = self.id,
                    halted_s = self.since.elapsed().as_secs_f64(),
                    "the schema registry answers again; taking records"
                );
                p.health.set_registry(None);
                p.metrics.set_registry_halted(false);
                Ok(true)
            }
        }
    }
}

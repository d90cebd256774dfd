//! Sink: where results and dead letters go. The dispatcher publishes
//! through the [`Publish`] trait; [`KafkaSink`] implements it with an
//! idempotent producer whose delivery callback marks a record's source
//! offset finished, i.e. only once the broker has acknowledged its output.
//! [`record`] builds the records (value, key, headers). A delivery failure
//! is fatal to the pipeline (nothing after it is committed): see [`Fatal`].

mod delivery;
mod poller;
mod producer;
mod record;
mod txn;

use std::future::Future;
use std::sync::Mutex;

use rdkafka::error::KafkaError;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::model::InputRecord;
pub(crate) use poller::{AfterPoll, PolledProducer, Record};
pub(crate) use producer::KafkaSink;

/// Errors creating or using the producer.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The broker did not acknowledge a record.
    #[error(transparent)]
    Delivery(Box<DeliveryFailure>),
    /// A transaction failed for good (`kafka.exactly_once`): the producer
    /// was fenced by a newer instance with the same transactional id, or
    /// the broker refuses transactions.
    #[error("transactions (kafka.exactly_once): {0}")]
    Transaction(KafkaError),
}

/// A record the broker did not acknowledge.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Kafka did not acknowledge the output of {topic}/{partition}@{offset}: {source}")]
pub struct DeliveryFailure {
    /// Input topic of the record whose output failed.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Cause.
    pub source: KafkaError,
}

/// One result, ready to publish for a record.
pub(crate) struct Resolution<'a> {
    /// Normalised identifier (the output key).
    pub(crate) identifier: &'a str,
    /// `business_email` or `profile_url`.
    pub(crate) identifier_type: &'a str,
    /// The API's matches array, verbatim.
    pub(crate) matches: &'a RawValue,
    /// Whether it holds a match.
    pub(crate) matched: bool,
    /// The job that resolved it.
    pub(crate) batch_id: &'a str,
    /// RFC 3339 time of resolution.
    pub(crate) resolved_at: &'a str,
    /// The W3C `traceparent` the output carries (a traced record's span).
    pub(crate) traceparent: Option<&'a str>,
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure<'a> {
    /// The `identify.error.reason` header (a bounded label).
    pub(crate) reason: &'static str,
    /// The `identify.error.message` header.
    pub(crate) message: &'a str,
    /// The identifier, once decoded (`identify.identifier`).
    pub(crate) identifier: Option<&'a str>,
    /// The job involved, if any (`identify.batch_id`).
    pub(crate) batch_id: Option<&'a str>,
}

/// Where the dispatcher's results and dead letters go. Publishing hands a
/// record over; it counts as finished (its offset may be committed) only
/// once the implementation says so to the offset tracker.
pub(crate) trait Publish: Send + Sync + 'static {
    /// Publishes the result record of `rec`. An output that can never be
    /// produced (too large, refused by the broker for itself) becomes a dead
    /// letter instead, so that no record stops its partition.
    fn output(&self, rec: &InputRecord, r: &Resolution<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Publishes `rec` unchanged to the dead-letter topic.
    fn dead_letter(&self, rec: &InputRecord, f: Failure<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// An output the broker refused for itself (too large for its limit, an
/// invalid record): it goes to the dead-letter topic.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The input record.
    pub(crate) rec: InputRecord,
    /// Its identifier.
    pub(crate) identifier: String,
    /// The job that resolved it.
    pub(crate) batch_id: String,
    /// What the broker said.
    pub(crate) error: KafkaError,
}

/// What the producer's callbacks report to the dispatcher: a fatal
/// delivery failure (the pipeline stops on it) or outputs refused for
/// themselves (dead-lettered).
#[derive(Debug, Default)]
pub(crate) struct Fatal {
    error: Mutex<Option<SinkError>>,
    refused: Mutex<Vec<Refused>>,
    /// Woken when either is reported.
    pub(crate) notify: Notify,
}

impl Fatal {
    /// Records the first fatal error.
    pub(crate) fn set(&self, e: SinkError) {
        let mut m = self.error.lock().expect("fatal");
        if m.is_none() {
            *m = Some(e);
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
    /// The fatal error, if any.
    pub(crate) fn get(&self) -> Option<SinkError> {
        self.error.lock().expect("fatal").clone()
    }
    /// Reports an output the broker refused for itself.
    pub(crate) fn refuse(&self, r: Refused) {
        self.refused.lock().expect("fatal").push(r);
        self.notify.notify_one();
    }
    /// The refused outputs reported so far.
    pub(crate) fn take_refused(&self) -> Vec<Refused> {
        std::mem::take(&mut *self.refused.lock().expect("fatal"))
    }
}

/// Whether a produce error concerns the record itself (retrying cannot fix
/// it, other records are fine): it is dead-lettered, not fatal.
pub(crate) fn per_record(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge | InvalidRecord | InvalidMessage)
    )
}

/// The dead-letter reason of an output refused for itself.
pub(crate) fn refused_reason(e: &KafkaError) -> &'static str {
    use rdkafka::error::RDKafkaErrorCode::*;
    match e.rdkafka_error_code() {
        Some(MessageSizeTooLarge | InvalidMessageSize | MessageBatchTooLarge) => "output_too_large",
        _ => "output_refused",
    }
}

//! Sink: where results and dead letters go. The dispatcher publishes
//! through the [`Publish`] trait; [`KafkaSink`] implements it with an
//! idempotent producer whose delivery callback marks a record's source
//! offset finished, i.e. only once the broker has acknowledged its output.
//! [`record`] builds the records (value, key, headers). A delivery failure
//! is fatal to the pipeline (nothing after it is committed): see [`Fatal`].

mod producer;
mod record;

use std::future::Future;
use std::sync::Mutex;

use rdkafka::error::KafkaError;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::model::InputRecord;
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
}

/// Where the dispatcher's results and dead letters go. Publishing hands a
/// record over; it counts as finished (its offset may be committed) only
/// once the implementation says so to the offset tracker.
pub(crate) trait Publish: Send + Sync + 'static {
    /// Publishes the result record of `rec`.
    fn output(&self, rec: &InputRecord, r: &Resolution<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Publishes `rec` unchanged to the dead-letter topic with its reason.
    fn dead_letter(
        &self,
        rec: &InputRecord,
        reason: &'static str,
        message: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Set when a record could not be delivered; the pipeline stops on it.
#[derive(Debug, Default)]
pub(crate) struct Fatal {
    error: Mutex<Option<SinkError>>,
    /// Woken when a fatal error is set.
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
}

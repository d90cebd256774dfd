//! The shared vocabulary of every stage: identifier types, identifiers, job
//! specs and the API's batch limit, the result of one identifier, and where
//! a consumed record came from. A leaf: it imports no other module.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::OwnedHeaders;
use serde_json::value::RawValue;

/// The API's limit of identifiers per submission.
pub(crate) const API_MAX_BATCH: usize = 300;

/// Every dead-letter reason (`identify.error.reason`) with its error
/// class: `input` (the record itself is bad), `api` (the API's verdict on
/// it after work), `output` (its output could not be produced).
pub(crate) const DEAD_LETTER_REASONS: [(&str, &str); 15] = [
    ("empty_value", "input"),
    ("unknown_schema", "input"),
    ("unusable_schema", "input"),
    ("not_decodable", "input"),
    ("oversized", "input"),
    ("not_parseable", "input"),
    ("missing_field", "input"),
    ("not_a_string", "input"),
    ("invalid_identifier", "input"),
    ("not_enrichable", "input"),
    ("api_rejected", "api"),
    ("job_failed", "api"),
    ("missing_result", "api"),
    ("output_too_large", "output"),
    ("output_refused", "output"),
];

/// The error class of dead-letter reason `reason`, if it is one.
pub(crate) fn reason_class(reason: &str) -> Option<&'static str> {
    DEAD_LETTER_REASONS.iter().find(|(r, _)| *r == reason).map(|(_, c)| *c)
}

/// Now, in ms since the epoch (the unit of record timestamps and of the
/// journal's times).
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The two identifier kinds the API accepts; one kind per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IdentifierType {
    /// `business_emails`
    BusinessEmail,
    /// `professional_network_profile_urls`
    ProfileUrl,
}

impl IdentifierType {
    /// Both kinds, in a fixed order.
    pub(crate) const ALL: [IdentifierType; 2] = [Self::BusinessEmail, Self::ProfileUrl];

    /// Name used in output records and metrics labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BusinessEmail => "business_email",
            Self::ProfileUrl => "profile_url",
        }
    }

    /// The submit body's field for this kind.
    pub(crate) fn request_field(self) -> &'static str {
        match self {
            Self::BusinessEmail => "business_emails",
            Self::ProfileUrl => "professional_network_profile_urls",
        }
    }

    /// Index into per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A valid identifier, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identifier {
    /// Which kind.
    pub(crate) kind: IdentifierType,
    /// Normalised value, as submitted to the API and used as output key.
    pub(crate) value: String,
}

/// A batch to run as one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobSpec {
    /// Identifier kind of every id.
    pub(crate) kind: IdentifierType,
    /// Unique normalised identifiers, at most [`API_MAX_BATCH`].
    pub(crate) ids: Vec<String>,
}

/// The result of one identifier: the API's `matches` array, verbatim.
pub(crate) type Matches = Box<RawValue>;

/// The empty `matches` array.
pub(crate) fn no_matches() -> Matches {
    RawValue::from_string("[]".into()).expect("valid JSON")
}

/// Whether a `matches` value holds at least one match (and so was billed).
pub(crate) fn has_matches(m: &RawValue) -> bool {
    let s = m.get().trim();
    if s == "null" {
        return false;
    }
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    !inner.is_some_and(|i| i.trim().is_empty())
}

/// A topic-partition.
pub(crate) type TopicPartition = (Arc<str>, i32);

/// Where a record came from, plus the assignment epoch it was consumed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SourcePos {
    /// Input topic.
    pub(crate) topic: Arc<str>,
    /// Partition.
    pub(crate) partition: i32,
    /// Offset of the record.
    pub(crate) offset: i64,
    /// Assignment epoch (a fresh one for every assignment of the partition).
    pub(crate) epoch: u64,
}

/// A consumed record, kept until its output is acknowledged (its key and
/// value go to the dead-letter topic if it cannot be resolved).
#[derive(Debug, Clone)]
pub(crate) struct InputRecord {
    /// Source coordinates.
    pub(crate) pos: SourcePos,
    /// Original key.
    pub(crate) key: Option<Bytes>,
    /// Original value.
    pub(crate) value: Option<Bytes>,
    /// Original headers, kept only with `output.forward_headers`.
    pub(crate) headers: Option<OwnedHeaders>,
    /// Record timestamp (ms since the epoch), for end-to-end latency.
    pub(crate) timestamp_ms: Option<i64>,
    /// Its W3C `traceparent` header, read only while telemetry is on.
    pub(crate) traceparent: Option<Box<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_that_bill() {
        let m = |s: &str| RawValue::from_string(s.into()).unwrap();
        assert!(has_matches(&m(r#"[{"confidence_score":1.0}]"#)));
        assert!(!has_matches(&m("[]")));
        assert!(!has_matches(&m("[ ]")));
        assert!(!has_matches(&m("null")));
        assert!(!has_matches(&no_matches()));
    }
}

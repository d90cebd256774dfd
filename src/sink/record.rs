//! The records the sink writes: the output value (the result plus its
//! source), the `identify.*` headers, and the dead letter (the original key
//! and value, the value's head when it would not fit the producer's
//! `message.max.bytes`).

use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Failure, Resolution};
use crate::model::{InputRecord, SourcePos};

/// Room kept in a dead-letter record for its key, headers and framing.
const DLQ_OVERHEAD: usize = 64 * 1024;

/// How many bytes of a dead-letter value fit a record of at most
/// `message_max_bytes` (the producer's `message.max.bytes`).
pub(super) fn dead_letter_value_limit(message_max_bytes: usize) -> usize {
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

/// The output value of `rec` resolved as `r`.
pub(super) fn output_value(rec: &InputRecord, r: &Resolution<'_>) -> Vec<u8> {
    serde_json::to_vec(&Output {
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
    .expect("output serializes")
}

/// `identify.source.{topic,partition,offset}`.
pub(super) fn source_headers(pos: &SourcePos) -> OwnedHeaders {
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

/// The headers of the output of `rec`: its source and the job.
pub(super) fn output_headers(rec: &InputRecord, batch_id: &str) -> OwnedHeaders {
    source_headers(&rec.pos).insert(Header {
        key: "identify.batch_id",
        value: Some(batch_id.as_bytes()),
    })
}

/// The headers and value of a dead letter: the source, the reason and a
/// message of at most 1000 characters, the identifier and job when known,
/// and the value, cut to `value_limit` bytes (the original size then in
/// `identify.error.value_truncated_from`).
pub(super) fn dead_letter<'a>(
    rec: &'a InputRecord,
    f: Failure<'_>,
    value_limit: usize,
) -> (OwnedHeaders, Option<&'a [u8]>) {
    let (reason, message) = (f.reason, f.message);
    let message: String = message.chars().take(1000).collect();
    // A value the broker accepted compressed may not fit a record of ours:
    // keep its head and say so, rather than stall the partition.
    let value = rec.value.as_deref();
    let truncated_from = value.filter(|v| v.len() > value_limit).map(|v| v.len().to_string());
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
    for (key, v) in [("identify.identifier", f.identifier), ("identify.batch_id", f.batch_id)] {
        if let Some(v) = v {
            headers = headers.insert(Header {
                key,
                value: Some(v.as_bytes()),
            });
        }
    }
    (headers, value.map(|v| &v[..v.len().min(value_limit)]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use rdkafka::message::Headers;

    use super::*;

    fn rec(value: &[u8]) -> InputRecord {
        InputRecord {
            pos: SourcePos {
                topic: Arc::from("emails"),
                partition: 3,
                offset: 1234,
                epoch: 1,
            },
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            timestamp_ms: None,
        }
    }

    fn header(h: &OwnedHeaders, key: &str) -> Option<String> {
        h.iter()
            .find(|x| x.key == key)
            .map(|x| String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned())
    }

    #[test]
    fn output_carries_the_result_and_its_source() {
        let matches = RawValue::from_string(r#"[{"confidence_score":1.0}]"#.into()).unwrap();
        let r = Resolution {
            identifier: "jane@acme.com",
            identifier_type: "business_email",
            matches: &matches,
            matched: true,
            batch_id: "b-1",
            resolved_at: "2026-11-30T12:00:00.000Z",
        };
        let v: serde_json::Value = serde_json::from_slice(&output_value(&rec(b"{}"), &r)).unwrap();
        assert_eq!(v["identifier"], "jane@acme.com");
        assert_eq!(v["matches"][0]["confidence_score"], 1.0);
        assert_eq!(v["source"]["partition"], 3);
        assert_eq!(v["source"]["offset"], 1234);
        let h = output_headers(&rec(b"{}"), "b-1");
        assert_eq!(header(&h, "identify.batch_id").as_deref(), Some("b-1"));
        assert_eq!(header(&h, "identify.source.offset").as_deref(), Some("1234"));
    }

    #[test]
    fn dead_letters_keep_the_value_or_its_head() {
        let small = rec(b"hello");
        let long = "m".repeat(5000);
        let f = |reason, message| Failure {
            reason,
            message,
            identifier: None,
            batch_id: None,
        };
        let (h, v) = dead_letter(&small, f("not_parseable", &long), 1024);
        assert_eq!(v, Some(&b"hello"[..]));
        assert_eq!(header(&h, "identify.error.reason").as_deref(), Some("not_parseable"));
        assert_eq!(header(&h, "identify.error.message").unwrap().len(), 1000);
        assert!(header(&h, "identify.error.value_truncated_from").is_none());
        let big = rec(&vec![b'x'; 5000]);
        let (h, v) = dead_letter(&big, f("oversized", ""), 1024);
        assert_eq!(v.unwrap().len(), 1024);
        assert_eq!(
            header(&h, "identify.error.value_truncated_from").as_deref(),
            Some("5000")
        );
        let too_large = Failure {
            reason: "output_too_large",
            message: "m",
            identifier: Some("jane@acme.com"),
            batch_id: Some("b-1"),
        };
        let (h, _) = dead_letter(&small, too_large, 1024);
        assert_eq!(header(&h, "identify.identifier").as_deref(), Some("jane@acme.com"));
        assert_eq!(header(&h, "identify.batch_id").as_deref(), Some("b-1"));
        assert_eq!(dead_letter_value_limit(1_000_000), 1_000_000 - 65_536);
        assert_eq!(dead_letter_value_limit(10), 1024);
    }
}

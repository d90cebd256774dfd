//! The records the sink writes, in the [`Shape`] `[output]` asks for: the
//! output value (the result plus its source, or the input enriched with
//! the result), its key, the headers (the input's when forwarded, then the
//! `identify.*` ones), and the dead letter (the original key and value, the
//! value's head when it would not fit the producer's `message.max.bytes`,
//! optionally Kafka Connect's error headers).

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Failure, Resolution};
use crate::config::{DeadLetterHeaders, OutputConfig, OutputKey};
use crate::enrich::{self, EnrichError, Pointer};
use crate::model::InputRecord;

/// Room kept in a dead-letter record for its key, headers and framing.
const DLQ_OVERHEAD: usize = 64 * 1024;

/// How many bytes of a dead-letter value fit a record of at most
/// `message_max_bytes` (the producer's `message.max.bytes`).
pub(super) fn dead_letter_value_limit(message_max_bytes: usize) -> usize {
    message_max_bytes.saturating_sub(DLQ_OVERHEAD).max(1024)
}

/// What the records look like: `[output]`, resolved once.
pub(crate) struct Shape {
    /// Enrich mode's pointer; `None` in result mode.
    pub(super) enrich_at: Option<Pointer>,
    /// `output.key = "input"`.
    pub(super) input_key: bool,
    /// `output.dead_letter_headers = "connect"`: the connector's name there.
    pub(super) connect: Option<String>,
    /// `output.forward_headers`: dead letters keep the input's headers.
    pub(super) forward_headers: bool,
}

impl Shape {
    /// The shape `[output]` asks for; `connector` names the connector in
    /// Kafka Connect's headers (the consumer group).
    pub(crate) fn new(cfg: &OutputConfig, connector: &str) -> Self {
        Self {
            enrich_at: cfg.enrich_pointer(),
            input_key: cfg.key == OutputKey::Input,
            connect: (cfg.dead_letter_headers == DeadLetterHeaders::Connect).then(|| connector.to_string()),
            forward_headers: cfg.forward_headers,
        }
    }

    /// The output key of `rec` resolved as `identifier`.
    pub(super) fn key<'a>(&self, rec: &'a InputRecord, identifier: &'a str) -> Option<&'a [u8]> {
        if self.input_key {
            rec.key.as_deref()
        } else {
            Some(identifier.as_bytes())
        }
    }

    /// The output value of `rec` resolved as `r`: the result record, or
    /// the input enriched with the result.
    pub(super) fn value(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<Vec<u8>, EnrichError> {
        let result = ResultObject {
            identifier: r.identifier,
            identifier_type: r.identifier_type,
            matched: r.matched,
            matches: r.matches,
            batch_id: r.batch_id,
            resolved_at: r.resolved_at,
        };
        match &self.enrich_at {
            None => Ok(serde_json::to_vec(&Output {
                result,
                source: SourceRef {
                    topic: &rec.pos.topic,
                    partition: rec.pos.partition,
                    offset: rec.pos.offset,
                },
            })
            .expect("output serializes")),
            Some(at) => {
                let result = serde_json::to_string(&result).expect("result serializes");
                enrich::enrich(rec.value.as_deref().unwrap_or_default(), at, &result)
            }
        }
    }
}

#[derive(Serialize)]
struct SourceRef<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// The result of one identifier: the same object in both modes.
#[derive(Serialize)]
struct ResultObject<'a> {
    identifier: &'a str,
    identifier_type: &'a str,
    matched: bool,
    matches: &'a RawValue,
    batch_id: &'a str,
    resolved_at: &'a str,
}

/// Result mode's record: the result and its source.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    result: ResultObject<'a>,
    source: SourceRef<'a>,
}

/// The input's forwarded headers (without any `identify.*` or
/// `__connect.errors.*` of its own: ours are added, never duplicated; nor
/// its `traceparent` when `new_traceparent` replaces it), then
/// `identify.source.{topic,partition,offset}`.
pub(super) fn source_headers(rec: &InputRecord, new_traceparent: bool) -> OwnedHeaders {
    let forwarded = rec.headers.as_ref().map_or(0, |h| h.count());
    let mut headers = OwnedHeaders::new_with_capacity(forwarded + 8);
    if let Some(input) = &rec.headers {
        for h in input.iter() {
            let ours = h.key.starts_with("identify.")
                || h.key.starts_with("__connect.errors.")
                || (new_traceparent && h.key.eq_ignore_ascii_case("traceparent"));
            if !ours {
                headers = headers.insert(h);
            }
        }
    }
    let pos = &rec.pos;
    // Formatted on the stack: these headers are built for every output.
    let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
    headers
        .insert(Header {
            key: "identify.source.topic",
            value: Some(pos.topic.as_bytes()),
        })
        .insert(Header {
            key: "identify.source.partition",
            value: Some(partition.format(pos.partition).as_bytes()),
        })
        .insert(Header {
            key: "identify.source.offset",
            value: Some(offset.format(pos.offset).as_bytes()),
        })
}

/// The headers of the output of `rec`: its source and the job, and the
/// `traceparent` of a traced record's span.
pub(super) fn output_headers(rec: &InputRecord, batch_id: &str, traceparent: Option<&str>) -> OwnedHeaders {
    let headers = source_headers(rec, traceparent.is_some()).insert(Header {
        key: "identify.batch_id",
        value: Some(batch_id.as_bytes()),
    });
    match traceparent {
        Some(tp) => headers.insert(Header {
            key: "traceparent",
            value: Some(tp.as_bytes()),
        }),
        None => headers,
    }
}

/// The Kafka Connect stage a dead-letter reason belongs to.
fn connect_stage(reason: &str) -> &'static str {
    match crate::model::reason_class(reason) {
        Some("output") => "KAFKA_PRODUCE",
        Some("api") => "TASK_PUT",
        _ => "VALUE_CONVERTER",
    }
}

/// The headers and value of a dead letter: the source, the reason and a
/// message of at most 1000 characters, the identifier and job when known,
/// and the value, cut to `value_limit` bytes (the original size then in
/// `identify.error.value_truncated_from`); with `shape.connect`, Kafka
/// Connect's `__connect.errors.*` headers as well.
pub(super) fn dead_letter<'a>(
    rec: &'a InputRecord,
    f: Failure<'_>,
    value_limit: usize,
    shape: &Shape,
) -> (OwnedHeaders, Option<&'a [u8]>) {
    let (reason, message) = (f.reason, f.message);
    let message: String = message.chars().take(1000).collect();
    // The key and the forwarded headers take their room in the record too.
    let forwarded: usize = rec.headers.as_ref().map_or(0, |h| {
        h.iter().map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len)).sum()
    });
    let value_limit = value_limit.saturating_sub(rec.key.as_ref().map_or(0, |k| k.len()) + forwarded);
    // A value the broker accepted compressed may not fit a record of ours:
    // keep its head and say so, rather than stall the partition.
    let value = rec.value.as_deref();
    let truncated_from = value.filter(|v| v.len() > value_limit).map(|v| v.len().to_string());
    let mut headers = source_headers(rec, false)
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
    // When it was dead-lettered (the record keeps the input's timestamp).
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    headers = headers.insert(Header {
        key: "identify.error.at",
        value: Some(at.as_bytes()),
    });
    if !shape.forward_headers {
        // The input's headers are not here: a re-drive would lose them.
        headers = headers.insert(Header {
            key: "identify.error.headers_dropped",
            value: Some(b"true"),
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
    if let Some(connector) = &shape.connect {
        // Kafka Connect's DLQ convention: numbers as decimal strings.
        let (partition, offset) = (rec.pos.partition.to_string(), rec.pos.offset.to_string());
        let connect: [(&str, &[u8]); 9] = [
            ("__connect.errors.topic", rec.pos.topic.as_bytes()),
            ("__connect.errors.partition", partition.as_bytes()),
            ("__connect.errors.offset", offset.as_bytes()),
            ("__connect.errors.connector.name", connector.as_bytes()),
            ("__connect.errors.task.id", b"0"),
            ("__connect.errors.stage", connect_stage(reason).as_bytes()),
            ("__connect.errors.class.name", b"identify-connector"),
            ("__connect.errors.exception.class.name", reason.as_bytes()),
            ("__connect.errors.exception.message", message.as_bytes()),
        ];
        for (key, v) in connect {
            headers = headers.insert(Header { key, value: Some(v) });
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
    use crate::config::OutputMode;
    use crate::model::SourcePos;

    fn shape(f: impl FnOnce(&mut OutputConfig)) -> Shape {
        let mut cfg = OutputConfig::default();
        f(&mut cfg);
        Shape::new(&cfg, "emails-group")
    }

    fn resolution(matches: &RawValue) -> Resolution<'_> {
        Resolution {
            identifier: "jane@acme.com",
            identifier_type: "business_email",
            matches,
            matched: true,
            batch_id: "b-1",
            resolved_at: "2026-11-30T12:00:00.000Z",
            traceparent: None,
        }
    }

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
            headers: None,
            timestamp_ms: None,
            traceparent: None,
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
        let r = resolution(&matches);
        let v: serde_json::Value = serde_json::from_slice(&shape(|_| {}).value(&rec(b"{}"), &r).unwrap()).unwrap();
        assert_eq!(v["identifier"], "jane@acme.com");
        assert_eq!(v["matches"][0]["confidence_score"], 1.0);
        assert_eq!(v["source"]["partition"], 3);
        assert_eq!(v["source"]["offset"], 1234);
        let h = output_headers(&rec(b"{}"), "b-1", None);
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
        let (h, v) = dead_letter(&small, f("not_parseable", &long), 1024, &shape(|_| {}));
        assert_eq!(v, Some(&b"hello"[..]));
        assert_eq!(header(&h, "identify.error.reason").as_deref(), Some("not_parseable"));
        assert_eq!(header(&h, "identify.error.message").unwrap().len(), 1000);
        assert!(header(&h, "identify.error.value_truncated_from").is_none());
        assert_eq!(
            header(&h, "identify.error.headers_dropped").as_deref(),
            Some("true"),
            "forward_headers is off: a re-drive must know the input's headers are not here"
        );
        let (h, _) = dead_letter(
            &small,
            f("not_parseable", ""),
            1024,
            &shape(|c| c.forward_headers = true),
        );
        assert!(header(&h, "identify.error.headers_dropped").is_none());
        let at = header(&h, "identify.error.at").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
        let big = rec(&vec![b'x'; 5000]);
        let (h, v) = dead_letter(&big, f("oversized", ""), 1024, &shape(|_| {}));
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
        let (h, _) = dead_letter(&small, too_large, 1024, &shape(|_| {}));
        assert_eq!(header(&h, "identify.identifier").as_deref(), Some("jane@acme.com"));
        assert_eq!(header(&h, "identify.batch_id").as_deref(), Some("b-1"));
        assert_eq!(dead_letter_value_limit(1_000_000), 1_000_000 - 65_536);
        assert_eq!(dead_letter_value_limit(10), 1024);
    }

    #[test]
    fn enrich_mode_keeps_the_input_and_adds_the_result_at_the_pointer() {
        let matches = RawValue::from_string("[]".into()).unwrap();
        let s = shape(|c| {
            c.mode = OutputMode::Enrich;
            c.enrich_field = "/meta/crustdata".into();
            c.key = OutputKey::Input;
        });
        let mut input = rec(br#"{"email":"Jane@Acme.com","meta":{"tenant":"t1"}}"#);
        input.key = Some(Bytes::from_static(b"user-42"));
        let v: serde_json::Value = serde_json::from_slice(&s.value(&input, &resolution(&matches)).unwrap()).unwrap();
        assert_eq!(v["email"], "Jane@Acme.com");
        assert_eq!(v["meta"]["tenant"], "t1");
        assert_eq!(v["meta"]["crustdata"]["identifier"], "jane@acme.com");
        assert_eq!(v["meta"]["crustdata"]["batch_id"], "b-1");
        assert!(v.get("source").is_none(), "the source stays in the headers");
        assert_eq!(s.key(&input, "jane@acme.com"), Some(&b"user-42"[..]));
        assert_eq!(shape(|_| {}).key(&input, "jane@acme.com"), Some(&b"jane@acme.com"[..]));
        input.key = None;
        assert_eq!(s.key(&input, "jane@acme.com"), None);
    }

    #[test]
    fn forwarded_headers_come_first_and_ours_are_never_duplicated() {
        let mut input = rec(b"{}");
        input.headers = Some(
            OwnedHeaders::new()
                .insert(Header {
                    key: "traceparent",
                    value: Some(&b"00-abc-01"[..]),
                })
                .insert(Header::<&[u8]> {
                    key: "tombstone",
                    value: None,
                })
                .insert(Header {
                    key: "identify.batch_id",
                    value: Some(&b"forged"[..]),
                }),
        );
        let h = output_headers(&input, "b-1", None);
        let keys: Vec<&str> = h.iter().map(|x| x.key).collect();
        assert_eq!(
            keys,
            [
                "traceparent",
                "tombstone",
                "identify.source.topic",
                "identify.source.partition",
                "identify.source.offset",
                "identify.batch_id"
            ]
        );
        assert_eq!(h.get(0).value, Some(&b"00-abc-01"[..]));
        assert_eq!(h.get(1).value, None);
        assert_eq!(header(&h, "identify.batch_id").as_deref(), Some("b-1"));
        // A traced record's span replaces the input's traceparent.
        let h = output_headers(&input, "b-1", Some("00-def-01"));
        let traceparents: Vec<_> = h.iter().filter(|x| x.key == "traceparent").map(|x| x.value).collect();
        assert_eq!(traceparents, [Some(&b"00-def-01"[..])]);
    }

    #[test]
    fn connect_dead_letter_headers() {
        let f = Failure {
            reason: "invalid_identifier",
            message: "invalid business_email: no @",
            identifier: None,
            batch_id: None,
        };
        let (h, _) = dead_letter(&rec(b"x"), f, 1024, &shape(|_| {}));
        assert!(
            header(&h, "__connect.errors.topic").is_none(),
            "identify headers only by default"
        );
        let connect = shape(|c| c.dead_letter_headers = DeadLetterHeaders::Connect);
        let (h, _) = dead_letter(&rec(b"x"), f, 1024, &connect);
        assert_eq!(header(&h, "__connect.errors.topic").as_deref(), Some("emails"));
        assert_eq!(header(&h, "__connect.errors.partition").as_deref(), Some("3"));
        assert_eq!(header(&h, "__connect.errors.offset").as_deref(), Some("1234"));
        assert_eq!(
            header(&h, "__connect.errors.connector.name").as_deref(),
            Some("emails-group")
        );
        assert_eq!(header(&h, "__connect.errors.stage").as_deref(), Some("VALUE_CONVERTER"));
        assert_eq!(
            header(&h, "__connect.errors.exception.class.name").as_deref(),
            Some("invalid_identifier")
        );
        assert_eq!(
            header(&h, "__connect.errors.exception.message").as_deref(),
            Some("invalid business_email: no @")
        );
        assert_eq!(
            header(&h, "identify.error.reason").as_deref(),
            Some("invalid_identifier")
        );
    }
}

//! The records the sink writes, in the [`Shape`] `[output]` asks for: the
//! output value (the result plus its source, or the input enriched with
//! the result), its key, the headers (the input's when forwarded, then the
//! `identify.*` ones), and the dead letter (the original key and value, the
//! value's head when it would not fit the producer's `message.max.bytes`,
//! optionally Kafka Connect's error headers).

use std::sync::Arc;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Failure, Resolution};
use crate::config::{DeadLetterHeaders, OutputConfig, OutputKey};
use crate::enrich::{self, Pointer};
use crate::model::InputRecord;
use crate::registry::{self, EncodeError, Encoder};

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
    /// Registry output (`output.format` other than `json`).
    pub(super) encoder: Option<Arc<Encoder>>,
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
            encoder: None,
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
    pub(super) fn value(&self, rec: &InputRecord, r: &Resolution<'_>) -> Result<Vec<u8>, EncodeError> {
        if let Some(encoder) = &self.encoder {
            return registry_value(encoder, rec, r, self.enrich_at.is_some());
        }
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
                    .map_err(|e| EncodeError::Bad(e.to_string()))
            }
        }
    }
}

/// The value in the registry's format: result mode's record, or the input
/// record enriched.
fn registry_value(
    encoder: &Encoder,
    rec: &InputRecord,
    r: &Resolution<'_>,
    enrich: bool,
) -> Result<Vec<u8>, EncodeError> {
    let matches = registry::matches(r.matches);
    if enrich {
        let result = registry::ResultValue {
            identifier: r.identifier,
            identifier_type: r.identifier_type,
            matched: r.matched,
            matches,
            batch_id: r.batch_id,
            resolved_at: r.resolved_at,
        };
        return encoder.enrich(rec.value.as_deref().unwrap_or_default(), &result);
    }
    encoder.result(&registry::OutputValue {
        identifier: r.identifier,
        identifier_type: r.identifier_type,
        matched: r.matched,
        matches,
        batch_id: r.batch_id,
        resolved_at: r.resolved_at,
        source: registry::SourceValue {
            topic: &rec.pos.topic,
            partition: rec.pos.partition,
            offset: rec.pos.offset,
        },
    })
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
#[path = "record_tests.rs"]
mod tests;

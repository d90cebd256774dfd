//! Unit tests of the records the sink writes: values in both modes, keys,
//! headers, dead letters.

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

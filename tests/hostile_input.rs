//! Hostile input: property tests of the record decoder and of the result
//! file parser (arbitrary bytes, oversized values, deep nesting, invalid
//! UTF-8, NUL bytes, 10 MB values, unicode and quoted emails: no panic, and
//! every bad record gets a `DecodeError` with a reason), plus hostile
//! records produced to Kafka, each dead-lettered with its reason.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use identify_connector::config::{IdentifierTypeSetting, InputConfig, InputFormat};
use identify_connector::decode::{DecodeError, Decoder};
use identify_connector::jobs::results::{self, ResultError};
use proptest::prelude::*;

const REASONS: [&str; 6] = [
    "empty_value",
    "oversized",
    "not_parseable",
    "missing_field",
    "not_a_string",
    "invalid_identifier",
];

fn decoder(format: InputFormat, kind: IdentifierTypeSetting, max: usize) -> Decoder {
    Decoder::new(&InputConfig {
        format,
        field: "/email".into(),
        identifier_type: kind,
        max_value_bytes: max,
    })
}

fn decoders() -> Vec<Decoder> {
    let mut all = Vec::new();
    for format in [InputFormat::Json, InputFormat::Text] {
        for kind in [
            IdentifierTypeSetting::BusinessEmail,
            IdentifierTypeSetting::ProfileUrl,
            IdentifierTypeSetting::Auto,
        ] {
            all.push(decoder(format, kind, 65_536));
        }
    }
    all
}

/// Decodes with every decoder; a refusal must carry a known reason and a
/// message, an acceptance a normalised identifier that decodes to itself.
fn check(value: Option<&[u8]>) {
    for d in decoders() {
        match d.decode(value) {
            Ok(id) => {
                assert!(!id.value.is_empty());
                assert!(!id.value.contains(['\0', '\n', ' ']), "{:?}", id.value);
                let again = decoder(InputFormat::Text, IdentifierTypeSetting::Auto, 65_536)
                    .decode(Some(id.value.as_bytes()))
                    .expect("a normalised identifier is valid");
                assert_eq!(again.value, id.value, "normalisation is idempotent");
            }
            Err(e) => {
                assert!(REASONS.contains(&e.reason()), "{e:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

fn json_email(s: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "email": s })).unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn email_reason(raw: &str) -> &'static str {
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    match d.decode(Some(&json_email(raw))) {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(Some(&bytes));
    }

    #[test]
    fn decoder_survives_arbitrary_strings_in_the_field(s in any::<String>()) {
        check(Some(&json_email(&s)));
        check(Some(s.as_bytes()));
    }

    #[test]
    fn decoder_survives_email_shaped_noise(
        local in r#"[a-zA-Z0-9._%+"\\ (),:;<>@\[\]!#$&'*/=?^`{|}~-]{0,70}"#,
        domain in r"[a-zA-Z0-9.\-_éф中]{0,70}",
        nul in any::<bool>(),
    ) {
        let mut email = format!("{local}@{domain}");
        if nul {
            email.insert(local.len(), '\0');
        }
        check(Some(&json_email(&email)));
        check(Some(email.as_bytes()));
        if nul {
            prop_assert_eq!(email_reason(&email), "invalid_identifier");
        }
    }

    #[test]
    fn decoder_refuses_values_over_the_bound(extra in 1usize..4096, max in 64usize..4096) {
        let value = vec![b'a'; max + extra];
        let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, max);
        let e = d.decode(Some(&value)).unwrap_err();
        prop_assert_eq!(e.reason(), "oversized");
        prop_assert_eq!(e, DecodeError::Oversized { size: max + extra, max });
    }

    #[test]
    fn decoder_survives_deep_nesting(depth in 1usize..20_000, object in any::<bool>()) {
        let (open, close) = if object { (r#"{"a":"#, "}") } else { ("[", "]") };
        let doc = format!(r#"{{"email":{}1{}}}"#, open.repeat(depth), close.repeat(depth));
        check(Some(doc.as_bytes()));
        let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 1 << 20);
        let reason = d.decode(Some(doc.as_bytes())).unwrap_err().reason();
        prop_assert!(["not_parseable", "not_a_string"].contains(&reason), "{}", reason);
    }

    #[test]
    fn result_parser_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = results::parse(&bytes, 1 << 20);
        let mut magic = vec![0x1f, 0x8b];
        magic.extend_from_slice(&bytes);
        let _ = results::parse(&magic, 1 << 20);
        let _ = results::parse(&gz(&bytes), 1 << 20);
    }

    #[test]
    fn result_parser_reads_what_it_is_given(
        lines in proptest::collection::btree_map("[^\r\n]{0,40}", proptest::option::of(0u32..3), 0..40),
        gzipped in any::<bool>(),
    ) {
        let mut text = String::new();
        let mut expect = Vec::new();
        for (id, n) in &lines {
            let matches = match n {
                None => "null".to_string(),
                Some(n) => format!("[{}]", vec![r#"{"confidence_score":1.0,"person_data":{"crustdata_person_id":7}}"#; *n as usize].join(",")),
            };
            text.push_str(&format!(r#"{{"matched_on":{},"matches":{matches}}}"#, serde_json::to_string(id).unwrap()));
            text.push('\n');
            expect.push((id.clone(), n.unwrap_or(0) > 0));
        }
        let data = if gzipped { gz(text.as_bytes()) } else { text.into_bytes() };
        let rows = results::parse(&data, 1 << 20).map_err(|e| TestCaseError::fail(format!("well-formed results refused: {e}")))?;
        let got: Vec<(String, bool)> = rows.iter().map(|r| (r.matched_on.clone(), results::has_matches(&r.matches))).collect();
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn result_parser_enforces_its_bound(max in 1024u64..8192, extra in 1u64..4096, gzipped in any::<bool>()) {
        let line = br#"{"matched_on":"a@b.co","matches":[]}"#;
        let mut text = Vec::new();
        while (text.len() as u64) <= max + extra {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let data = if gzipped { gz(&text) } else { text };
        prop_assert_eq!(results::parse(&data, max).unwrap_err(), ResultError::TooLarge(max));
    }
}

#[test]
fn ten_megabyte_values_are_refused_without_panic() {
    let ten = 10 << 20;
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    let big = vec![b'x'; ten];
    assert_eq!(d.decode(Some(&big)).unwrap_err().reason(), "oversized");
    // With a bound above it, the value is read and refused on its merits.
    let roomy = |f| decoder(f, IdentifierTypeSetting::Auto, 16 << 20);
    let long_email = json_email(&format!("{}@example.com", "a".repeat(ten)));
    assert_eq!(
        roomy(InputFormat::Json).decode(Some(&long_email)).unwrap_err().reason(),
        "invalid_identifier"
    );
    let mut not_utf8 = vec![0xffu8; ten];
    not_utf8[0] = b'a';
    assert_eq!(
        roomy(InputFormat::Text).decode(Some(&not_utf8)).unwrap_err().reason(),
        "not_parseable"
    );
    assert_eq!(
        roomy(InputFormat::Json).decode(Some(&not_utf8)).unwrap_err().reason(),
        "not_parseable"
    );
    let deep = "[".repeat(ten);
    assert_eq!(
        roomy(InputFormat::Json)
            .decode(Some(deep.as_bytes()))
            .unwrap_err()
            .reason(),
        "not_parseable"
    );
    let nuls = vec![0u8; ten];
    assert_eq!(
        roomy(InputFormat::Text).decode(Some(&nuls)).unwrap_err().reason(),
        "invalid_identifier"
    );
    // A 10 MB result line with a 1 MB bound, and a 10 MB gzip of zeros.
    let line = format!(r#"{{"matched_on":"{}","matches":[]}}"#, "a".repeat(ten));
    assert!(matches!(
        results::parse(line.as_bytes(), 1 << 20),
        Err(ResultError::TooLarge(_))
    ));
    assert!(matches!(
        results::parse(&gz(&nuls), 1 << 20),
        Err(ResultError::TooLarge(_))
    ));
    let deep_matches = format!(r#"{{"matched_on":"a","matches":{}}}"#, "[".repeat(1 << 20));
    assert!(matches!(
        results::parse(deep_matches.as_bytes(), 4 << 20),
        Err(ResultError::Corrupt(_))
    ));
}

#[test]
fn unicode_quoted_and_nul_emails_are_invalid_identifiers() {
    for raw in [
        "jöse@exämple.com",
        "用户@例子.广告",
        "\"john doe\"@example.com",
        "\"a@b\"@example.com",
        "john\\@doe@example.com",
        "a\u{0}b@example.com",
        "ab@exa\u{0}mple.com",
        "a@b@example.com",
        "a..b@example.com",
        "ab@example",
        "ab@-example.com",
        "ab@example.c0m",
        "\u{202e}ab@example.com",
        "ab@example.com\u{200b}",
    ] {
        assert_eq!(email_reason(raw), "invalid_identifier", "{raw:?}");
    }
    // Surrounding whitespace is trimmed; case is folded.
    assert_eq!(email_reason("  Jane.Doe+tag@Example.COM \n"), "accepted");
    // A raw NUL inside a JSON string is not JSON at all.
    let d = decoder(InputFormat::Json, IdentifierTypeSetting::BusinessEmail, 65_536);
    assert_eq!(
        d.decode(Some(b"{\"email\":\"a\0b@example.com\"}"))
            .unwrap_err()
            .reason(),
        "not_parseable"
    );
}

/// Raw records: optional key, optional value (`None`: a tombstone).
type RawRecords = Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Records with a null value (tombstones) cannot go through
/// `kafka::produce`, which always sets a payload.
async fn produce_raw(topic: &str, records: &RawRecords) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .create()
        .unwrap();
    for (key, value) in records {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic).partition(0);
        if let Some(k) = key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = value {
            rec = rec.payload(v.as_slice());
        }
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_in_kafka_are_each_dead_lettered_with_their_reason() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("hostile", 1).await;
    let deep = format!(r#"{{"email":{}1{}}}"#, "[".repeat(1_000), "]".repeat(1_000));
    let big = format!(r#"{{"email":"big@example.com","pad":"{}"}}"#, "x".repeat(900_000));
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("empty_value", None),
        ("not_parseable", Some(Vec::new())),
        ("not_parseable", Some(b"{not json".to_vec())),
        ("not_parseable", Some(b"{\"email\":\"\xff\xfe@example.com\"}".to_vec())),
        ("not_parseable", Some(b"{\"email\":\"a\0b@example.com\"}".to_vec())),
        // 1,000 levels: past serde_json's recursion limit for a tree, or
        // skipped as raw JSON and found not to be a string.
        ("not_parseable|not_a_string", Some(deep.into_bytes())),
        ("not_parseable", Some(vec![0xc3, 0x28, 0xa0, 0xa1, 0x00, 0xff])),
        ("missing_field", Some(br#"{"mail":"jane@example.com"}"#.to_vec())),
        ("missing_field", Some(br#"[1,2,3]"#.to_vec())),
        ("not_a_string", Some(br#"{"email":42}"#.to_vec())),
        (
            "not_a_string",
            Some(br#"{"email":{"email":"jane@example.com"}}"#.to_vec()),
        ),
        ("not_a_string", Some(br#"{"email":null}"#.to_vec())),
        ("invalid_identifier", Some(json_email("jöse@exämple.com"))),
        ("invalid_identifier", Some(json_email("\"john doe\"@example.com"))),
        ("invalid_identifier", Some(json_email("a\u{0}b@example.com"))),
        (
            "invalid_identifier",
            Some(json_email(&format!("{}@example.com", "a".repeat(300)))),
        ),
        ("invalid_identifier", Some(json_email(""))),
        ("oversized", Some(big.into_bytes())),
    ];
    let valid = 20;
    let mut records: RawRecords = Vec::new();
    let mut expected = std::collections::HashMap::new();
    for (i, (reason, value)) in cases.iter().enumerate() {
        // Interleave valid records; hostile keys too (invalid UTF-8, NUL).
        records.push((None, Some(common::event(&format!("fine{i}@example.com")))));
        expected.insert(records.len() as i64, (*reason, value.clone()));
        records.push((Some(vec![0xff, 0x00, b'k', i as u8]), value.clone()));
    }
    for i in cases.len()..valid {
        records.push((None, Some(common::event(&format!("fine{i}@example.com")))));
    }
    produce_raw(&topics.input, &records).await;

    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.input.max_value_bytes = 4096;
    let started = Instant::now();
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    connector.stop().await;

    let audit = common::audit(&topics);
    println!("{}", audit.result_line("hostile_input_kafka", elapsed));
    println!("hostile_input_kafka: dead_lettered_by_reason={:?}", audit.dlq_reasons());
    audit.assert_nothing_lost("hostile input");
    assert_eq!(audit.inputs, records.len());
    assert_eq!(audit.outputs.len(), valid, "every valid record resolved");
    assert_eq!(audit.dlq.len(), cases.len(), "every hostile record dead-lettered once");
    for d in &audit.dlq {
        let offset: i64 = d.header("identify.source.offset").parse().unwrap();
        let (reason, value) = &expected[&offset];
        let got = d.header("identify.error.reason");
        assert!(
            reason.split('|').any(|r| r == got),
            "offset {offset}: {got}, expected {reason}"
        );
        assert!(!d.header("identify.error.message").is_empty());
        assert_eq!(&d.value, value, "offset {offset}: the original value is kept");
        assert_eq!(
            d.key.as_deref().unwrap()[..3],
            [0xff, 0x00, b'k'],
            "the original key is kept"
        );
    }
}

/// A record the broker accepts (compressed, it is small) but whose dead
/// letter, the original value unchanged, would be larger than the
/// producer's `message.max.bytes` (librdkafka's default: 1,000,000 bytes):
/// its dead letter carries the head of the value and the original size in
/// `identify.error.value_truncated_from`, and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_over_the_producer_limit_is_truncated_and_the_partition_moves_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("dlqlimit", 1).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("message.max.bytes", "4000000")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let huge = format!(r#"{{"email":"huge@example.com","pad":"{}"}}"#, "x".repeat(1_500_000));
    let values = [
        common::event("before@example.com"),
        huge.clone().into_bytes(),
        common::event("after@example.com"),
    ];
    for v in &values {
        let rec = FutureRecord::<(), [u8]>::to(&topics.input)
            .partition(0)
            .payload(v.as_slice());
        producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("the broker accepts the compressed record");
    }
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.input.max_value_bytes = 4096;
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("dlq_over_producer_limit", 0.0));
    assert!(audit.lost.is_empty());
    assert_eq!(audit.outputs.len(), 2, "the records around it are resolved");
    assert_eq!(audit.dlq.len(), 1);
    let d = &audit.dlq[0];
    assert_eq!(d.header("identify.error.reason"), "oversized");
    assert_eq!(d.header("identify.error.value_truncated_from"), huge.len().to_string());
    let kept = d.value.as_deref().unwrap();
    assert!(kept.len() < 1_000_000 && kept.len() > 900_000, "{}", kept.len());
    assert!(huge.as_bytes().starts_with(kept), "the head of the original value");
}

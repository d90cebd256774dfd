//! Hostile records in Kafka: each dead-lettered with its reason, the
//! original key and value kept; a dead letter over the producer's limit is
//! truncated and the partition moves on. (Property tests of the decoder
//! and the result parser are unit tests next to them.)

mod common;

use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};

fn json_email(s: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "email": s })).unwrap()
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

//! The broker path: create a topic on the real local Apache Kafka, produce
//! to it and consume back through rdkafka.

mod common;

use common::kafka;

#[tokio::test]
async fn create_produce_consume_on_real_broker() {
    let topic = kafka::unique("broker-check");
    kafka::create_topics(&[(&topic, 3)]).await;
    let records: Vec<(Option<String>, Vec<u8>)> = (0..300)
        .map(|i| (Some(format!("k{i}")), format!("v{i}").into_bytes()))
        .collect();
    kafka::produce(&topic, 3, &records).await;
    assert_eq!(kafka::end_offsets(&topic, 3), vec![100, 100, 100]);
    let got = kafka::read_all(&topic, 3);
    assert_eq!(got.len(), 300);
    let mut values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    assert!(got.iter().all(|r| r.key.as_deref().unwrap().starts_with(b"k")));
}

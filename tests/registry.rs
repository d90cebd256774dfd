//! Input in the Confluent wire format (`input.format = "registry"`):
//! Avro, JSON Schema and Protobuf records made by Confluent's own Python
//! serializers against a real Schema Registry (AxonOps), resolved end to
//! end; an unknown schema id and undecodable bytes dead-lettered with their
//! reasons; a registry paused (SIGSTOP) while records of a schema not yet
//! fetched arrive halts the pipeline, with nothing dead-lettered or lost,
//! and it resumes by itself (SIGCONT).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{kafka, Connector, Topics};
use identify_connector::config::InputFormat;
use identify_connector::Config;
use testkit::registry::{python_produce, SchemaRegistry};

fn registry_config(topics: &Topics, sim_url: &str, registry: &SchemaRegistry) -> Config {
    let mut cfg = common::config(topics, sim_url);
    cfg.input.format = InputFormat::Registry;
    cfg.input.field = "/email".into();
    cfg.schema_registry.url = registry.url.clone();
    cfg
}

fn produce(registry: &SchemaRegistry, topic: &str, format: &str, prefix: &str, count: usize, name: &str) -> u32 {
    let count = count.to_string();
    tokio::task::block_in_place(|| {
        python_produce(
            registry,
            &[
                "--topic", topic, "--format", format, "--prefix", prefix, "--count", &count, "--name", name,
            ],
        )
        .1
    })
}

/// The emails `registry_produce.py` writes for `prefix`.
fn emails(prefix: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count).map(move |i| format!("{prefix}{i}@example{}.com", i % 13))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_json_schema_and_protobuf_inputs_resolve_end_to_end() {
    const N: usize = 200;
    let registry = SchemaRegistry::start().await;
    // One topic, one subject, three schema types.
    registry.compatibility_none().await;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("registry", 3).await;
    let avro = produce(&registry, &topics.input, "avro", "avro", N, "Event");
    produce(&registry, &topics.input, "json", "json", N, "Event");
    produce(&registry, &topics.input, "protobuf", "proto", N, "Event");
    // Bad records: an id the registry never gave, Avro bytes that do not
    // decode with their schema, and plain JSON (not the wire format).
    let mut unknown = vec![0, 0, 0, 0x27, 0x0f];
    unknown.extend(b"\x0ajane@acme.com");
    let mut undecodable = vec![0];
    undecodable.extend(avro.to_be_bytes());
    undecodable.extend([0xff, 0xff, 0xff]);
    let plain = br#"{"email":"jane@acme.com"}"#.to_vec();
    let bad = [unknown, undecodable, plain];
    let bad_records: Vec<_> = bad.iter().map(|v| (Some("bad-key".to_string()), v.clone())).collect();
    kafka::produce(&topics.input, 3, &bad_records).await;

    let connector = Connector::start(registry_config(&topics, &sim.base_url(), &registry)).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("registry_formats", 0.0));
    audit.assert_nothing_lost("registry formats");
    assert_eq!(audit.duplicates, 0);
    let reasons = audit.dlq_reasons();
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        [("not_decodable".to_string(), 2), ("unknown_schema".to_string(), 1)],
        "only the bad records are dead-lettered, each with its reason"
    );
    for letter in &audit.dlq {
        assert!(
            bad.iter().any(|b| letter.value.as_deref() == Some(b.as_slice())),
            "a dead letter keeps the input's bytes exactly"
        );
        assert_eq!(letter.key.as_deref(), Some(&b"bad-key"[..]), "and its key");
    }
    let got: HashSet<String> = audit
        .outputs
        .iter()
        .map(|r| r.json()["identifier"].as_str().unwrap().to_string())
        .collect();
    let want: HashSet<String> = emails("avro", N)
        .chain(emails("json", N))
        .chain(emails("proto", N))
        .collect();
    assert_eq!(audit.outputs.len(), 3 * N, "one output per valid record");
    assert_eq!(got, want, "each format's identifiers, read from the decoded records");
    assert_eq!(registry.subjects().await, [format!("{}-value", topics.input)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_registry_halts_the_pipeline_without_dead_letters_and_it_resumes() {
    let registry = SchemaRegistry::start().await;
    registry.compatibility_none().await;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("registry-halt", 3).await;
    produce(&registry, &topics.input, "avro", "before", 100, "Event");
    // A second schema, registered now, whose records arrive only while the
    // registry is paused: the connector has not fetched it.
    let count = "200".to_string();
    let (lines, later) = tokio::task::block_in_place(|| {
        python_produce(
            &registry,
            &[
                "--format", "avro", "--prefix", "during", "--count", &count, "--name", "Later", "--raw",
            ],
        )
    });
    let values: Vec<(Option<String>, Vec<u8>)> = lines
        .lines()
        .map(|l| {
            let v = base64::engine::general_purpose::STANDARD.decode(l).unwrap();
            (Some("user".to_string()), v)
        })
        .collect();
    assert_eq!(values.len(), 200);

    let connector = Connector::start(registry_config(&topics, &sim.base_url(), &registry)).await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    assert!(connector.running.ready(), "ready before the pause");

    registry.pause();
    let paused = Instant::now();
    kafka::produce(&topics.input, 3, &values).await;
    let readyz = format!("http://{}/readyz", connector.running.http_addr);
    let mut reason = String::new();
    kafka::wait_for("readyz names the schema registry", Duration::from_secs(30), || {
        reason = common::get_blocking(&readyz);
        reason.contains("schema registry")
    })
    .await;
    println!("readyz while paused: {reason}");
    assert_eq!(common::metric(&connector.metrics(), "identify_registry_halted"), 1.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(paused.elapsed())).await;
    assert!(
        kafka::read_all(&topics.dlq, 1).is_empty(),
        "nothing is dead-lettered while the registry cannot answer"
    );
    registry.resume();
    let resumed = Instant::now();
    common::wait_done(&topics, Duration::from_secs(120)).await;
    println!(
        "schema {later}: resumed and drained {:.1} s after SIGCONT",
        resumed.elapsed().as_secs_f64()
    );
    assert_eq!(common::metric(&connector.metrics(), "identify_registry_halted"), 0.0);
    kafka::wait_for("ready again", Duration::from_secs(10), || connector.running.ready()).await;
    connector.stop().await;
    let audit = common::audit(&topics);
    println!(
        "{}",
        audit.result_line("registry_paused", resumed.elapsed().as_secs_f64())
    );
    audit.assert_nothing_lost("registry paused");
    assert!(audit.dlq.is_empty(), "0 valid records dead-lettered");
    assert_eq!(audit.outputs.len(), 300);
}

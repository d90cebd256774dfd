//! Output in the registry's formats, read back by Confluent's own Python
//! deserializers against a real Schema Registry (AxonOps): result records
//! in Avro and JSON Schema (TopicNameStrategy and RecordNameStrategy), and
//! enrich mode keeping the input's format (Avro in, Avro out; JSON Schema
//! in, JSON Schema out) under a schema that is a compatible evolution of
//! the input's. A registry that refuses the output schema stops the start
//! (result mode) or halts the pipeline at first use (enrich mode), which
//! resumes once the registry takes it.

mod common;

use std::time::Duration;

use common::{kafka, Connector, Topics};
use identify_connector::config::{InputFormat, OutputFormat, OutputKey, OutputMode, SubjectStrategy};
use identify_connector::Config;
use serde_json::Value;
use testkit::registry::{python_consume, python_produce, SchemaRegistry};

const N: usize = 150;

fn emails(prefix: &str) -> Vec<String> {
    (0..N).map(|i| format!("{prefix}{i}@example{}.com", i % 13)).collect()
}

/// JSON inputs `{"email": ...}` on `topics.input`.
async fn produce_json(topics: &Topics, prefix: &str) {
    let records: Vec<(Option<String>, Vec<u8>)> = emails(prefix)
        .into_iter()
        .map(|e| (None, serde_json::json!({ "email": e }).to_string().into_bytes()))
        .collect();
    kafka::produce(&topics.input, 3, &records).await;
}

fn output_config(topics: &Topics, sim: &str, registry: &SchemaRegistry, format: OutputFormat) -> Config {
    let mut cfg = common::config(topics, sim);
    cfg.input.field = "/email".into();
    cfg.output.format = format;
    cfg.schema_registry.url = registry.url.clone();
    cfg
}

/// Checks one result (result mode's record, or enrich mode's field).
fn check_result(r: &Value) -> bool {
    assert_eq!(r["identifier_type"], "business_email");
    assert!(r["batch_id"].as_str().is_some_and(|b| !b.is_empty()));
    let matches = r["matches"].as_array().expect("matches");
    assert_eq!(r["matched"], !matches.is_empty());
    for m in matches {
        let whole: Value = serde_json::from_str(m["match_json"].as_str().unwrap()).expect("match_json is JSON");
        let id = &whole["person_data"]["crustdata_person_id"];
        let id = id.as_str().map_or_else(|| id.to_string(), str::to_string);
        assert_eq!(m["crustdata_person_id"], id, "stable fields agree with the whole match");
    }
    !matches.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_records_in_avro_and_json_schema_read_by_confluent_deserializers() {
    let registry = SchemaRegistry::start().await;
    let sim = common::start_sim(|_| {}).await;
    for (format, reader, strategy) in [
        (OutputFormat::Avro, "avro", SubjectStrategy::Topic),
        (OutputFormat::JsonSchema, "json", SubjectStrategy::Record),
    ] {
        let topics = Topics::create(&format!("registry-out-{reader}"), 3).await;
        produce_json(&topics, reader).await;
        let mut cfg = output_config(&topics, &sim.base_url(), &registry, format);
        cfg.output.subject_strategy = strategy;
        let connector = Connector::start(cfg).await;
        common::wait_done(&topics, Duration::from_secs(120)).await;
        connector.stop().await;
        let audit = common::audit(&topics);
        println!("{}", audit.result_line(&format!("registry_output_{reader}"), 0.0));
        audit.assert_nothing_lost(reader);
        assert_eq!(audit.duplicates, 0);
        assert!(audit.dlq.is_empty());

        let records = tokio::task::block_in_place(|| python_consume(&registry, &topics.output, reader, N));
        let mut got: Vec<String> = Vec::new();
        let mut matched = 0;
        for r in &records {
            let v = &r["value"];
            matched += usize::from(check_result(v));
            assert_eq!(v["source"]["topic"], topics.input.as_str());
            assert_eq!(
                v["source"]["offset"].to_string(),
                r["headers"]["identify.source.offset"].as_str().unwrap()
            );
            got.push(v["identifier"].as_str().unwrap().to_string());
        }
        got.sort();
        let mut want = emails(reader);
        want.sort();
        assert_eq!(got, want, "{reader}: every identifier, deserialized");
        assert!(matched > 0, "{reader}: some outputs carry matches");
        let subject = match strategy {
            SubjectStrategy::Topic => format!("{}-value", topics.output),
            SubjectStrategy::Record => "io.crustdata.identify.IdentifyOutput".to_string(),
        };
        let latest = registry
            .latest(&subject)
            .await
            .expect("the output subject is registered");
        assert_eq!(
            latest["id"], records[0]["schema_id"],
            "{reader}: written with the registered schema"
        );
        let kind = latest["schemaType"].as_str().unwrap_or("AVRO");
        assert_eq!(kind, if reader == "avro" { "AVRO" } else { "JSON" });
        println!(
            "{reader}: {} records, {matched} matched, subject {subject}",
            records.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_mode_keeps_the_input_format_under_a_compatible_evolution() {
    let registry = SchemaRegistry::start().await;
    let sim = common::start_sim(|_| {}).await;
    for (format, kind) in [("avro", "AVRO"), ("json", "JSON")] {
        let topics = Topics::create(&format!("registry-enrich-{format}"), 3).await;
        let count = N.to_string();
        // A JSON Schema with an open content model cannot gain a property
        // compatibly (Confluent's rule, which the registry applies): the
        // input's schema is closed, as it must be for a compatible evolution.
        tokio::task::block_in_place(|| {
            python_produce(
                &registry,
                &[
                    "--topic",
                    &topics.input,
                    "--format",
                    format,
                    "--prefix",
                    format,
                    "--count",
                    &count,
                    "--closed",
                ],
            )
        });
        let input_subject = format!("{}-value", topics.input);
        registry.set_compatibility(&input_subject, "BACKWARD").await;
        let mut cfg = output_config(&topics, &sim.base_url(), &registry, OutputFormat::Input);
        cfg.input.format = InputFormat::Registry;
        cfg.output.mode = OutputMode::Enrich;
        cfg.output.key = OutputKey::Input;
        let connector = Connector::start(cfg).await;
        common::wait_done(&topics, Duration::from_secs(120)).await;
        connector.stop().await;
        let audit = common::audit(&topics);
        audit.assert_nothing_lost(format);
        assert!(audit.dlq.is_empty());

        let records = tokio::task::block_in_place(|| python_consume(&registry, &topics.output, format, N));
        let mut got: Vec<String> = Vec::new();
        for r in &records {
            let v = &r["value"];
            check_result(&v["crustdata"]);
            assert_eq!(v["crustdata"]["identifier"], v["email"], "the input's fields are kept");
            assert!(v["user"].as_i64().is_some(), "{format}: {v}");
            got.push(v["email"].as_str().unwrap().to_string());
        }
        got.sort();
        let mut want = emails(format);
        want.sort();
        assert_eq!(got, want, "{format}: every input, enriched");
        let output_subject = format!("{}-value", topics.output);
        let latest = registry.latest(&output_subject).await.expect("the output subject");
        assert_eq!(latest["id"], records[0]["schema_id"]);
        let evolved = latest["schema"].as_str().unwrap();
        assert!(
            registry.compatible(&input_subject, kind, evolved).await,
            "{format}: the output schema is a compatible evolution of the input's subject"
        );
        println!("{format}: {} enriched records, subject {output_subject}", records.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_output_schema_stops_the_start_or_halts_until_the_registry_takes_it() {
    let registry = SchemaRegistry::start().await;
    let sim = common::start_sim(|_| {}).await;
    // Result mode: the output subject holds another record and keeps
    // BACKWARD compatibility, so ours (fields without defaults) is refused.
    let topics = Topics::create("registry-refused", 3).await;
    let subject = format!("{}-value", topics.output);
    let other = r#"{"type":"record","name":"IdentifyOutput","namespace":"io.crustdata.identify","fields":[{"name":"x","type":"int"}]}"#;
    registry.register(&subject, "AVRO", other).await;
    registry.set_compatibility(&subject, "BACKWARD").await;
    let cfg = output_config(&topics, &sim.base_url(), &registry, OutputFormat::Avro);
    let refused = match identify_connector::start(cfg, std::future::pending()).await {
        Ok(_) => panic!("the start must fail when the registry refuses the output schema"),
        Err(e) => e.to_string(),
    };
    println!("start refused: {refused}");
    assert!(
        refused.contains("refuses the output schema") && refused.contains(&subject),
        "{refused}"
    );

    // Enrich mode: the same refusal halts at the first record, without a
    // dead letter, and the pipeline resumes when the subject allows it.
    let topics = Topics::create("registry-refused-enrich", 3).await;
    let count = N.to_string();
    tokio::task::block_in_place(|| {
        python_produce(
            &registry,
            &[
                "--topic",
                &topics.input,
                "--format",
                "avro",
                "--prefix",
                "halt",
                "--count",
                &count,
            ],
        )
    });
    let subject = format!("{}-value", topics.output);
    registry.register(&subject, "AVRO", other).await;
    registry.set_compatibility(&subject, "BACKWARD").await;
    let mut cfg = output_config(&topics, &sim.base_url(), &registry, OutputFormat::Input);
    cfg.input.format = InputFormat::Registry;
    cfg.output.mode = OutputMode::Enrich;
    let connector = Connector::start(cfg).await;
    let readyz = format!("http://{}/readyz", connector.running.http_addr);
    let mut reason = String::new();
    kafka::wait_for("readyz names the refused schema", Duration::from_secs(30), || {
        reason = common::get_blocking(&readyz);
        reason.contains("refuses the output schema")
    })
    .await;
    println!("readyz while refused: {reason}");
    assert_eq!(common::metric(&connector.metrics(), "identify_registry_halted"), 1.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(kafka::read_all(&topics.dlq, 1).is_empty(), "nothing dead-lettered");
    assert!(kafka::read_all(&topics.output, 1).is_empty(), "nothing written");
    registry.set_compatibility(&subject, "NONE").await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    kafka::wait_for("ready again", Duration::from_secs(10), || connector.running.ready()).await;
    connector.stop().await;
    let audit = common::audit(&topics);
    audit.assert_nothing_lost("refused, then taken");
    assert!(audit.dlq.is_empty());
    assert_eq!(audit.outputs.len(), N);
}

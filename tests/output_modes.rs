//! Output that fits the pipeline it attaches to: enrich mode (the input
//! event, unchanged, with the result at a pointer), the input's key and
//! headers carried over, Kafka Connect's dead-letter headers, and the
//! example downstream consumer run against both modes.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{kafka, Connector, Topics};
use identify_connector::config::{DeadLetterHeaders, OutputKey, OutputMode};
use kafka::HeaderList;
use serde_json::{json, Value};

/// Runs examples/downstream_consumer.py over `topic` until idle; returns
/// (exit success, records it read, invalid records).
fn downstream_consumer(topic: &str, mode: &str) -> (bool, usize, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new(root.join("scripts/py-venv.sh"))
        .output()
        .expect("scripts/py-venv.sh");
    assert!(
        venv.status.success(),
        "py-venv: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();
    let out = Command::new(python)
        .arg(root.join("examples/downstream_consumer.py"))
        .args(["--brokers", &kafka::bootstrap(), "--topic", topic, "--mode", mode])
        .args([
            "--group",
            &kafka::unique("downstream"),
            "--from-beginning",
            "--read-committed",
        ])
        .args(["--idle-exit", "5"])
        .output()
        .expect("run the downstream consumer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr
        .lines()
        .rev()
        .find(|l| l.ends_with(" invalid"))
        .unwrap_or_else(|| panic!("no summary from the downstream consumer:\n{stderr}"));
    // "<n> records, <m> invalid"
    let numbers: Vec<usize> = summary.split(' ').filter_map(|w| w.parse().ok()).collect();
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    println!("downstream_consumer --mode {mode}: {summary}; printed {lines} lines");
    (out.status.success(), numbers[0], numbers[1])
}

/// An input event of user `i`: nested objects, unicode, sometimes an old
/// `crustdata` member (to be replaced), all keyed by user.
fn event(i: usize) -> Value {
    let mut v = json!({
        "email": format!(" User{i}@Example{}.com ", i % 7),
        "user": {"id": i, "name": "Zoë 😀 Ünïcødé", "tags": ["a", {"b": [1, 2.5, null]}]},
        "amount": 12.50,
    });
    if i % 10 == 0 {
        v["crustdata"] = json!({"stale": true});
    }
    v
}

fn headers_of(i: usize) -> HeaderList {
    vec![
        (
            "traceparent".into(),
            Some(format!("00-{i:032x}-00f067aa0ba902b7-01").into_bytes()),
        ),
        ("tenant".into(), Some(vec![0xff, 0x00, b't', (i % 256) as u8])),
        ("no-value".into(), None),
        // A forged header of ours: never forwarded, never duplicated.
        ("identify.batch_id".into(), Some(b"forged".to_vec())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_mode_keeps_the_event_its_key_and_headers() {
    const N: usize = 3_000;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("enrich", 3).await;
    let mut records: Vec<(Option<String>, Vec<u8>, HeaderList)> = (0..N)
        .map(|i| {
            let key = format!("user-{}", i % 97);
            (Some(key), serde_json::to_vec(&event(i)).unwrap(), headers_of(i))
        })
        .collect();
    // Values that cannot be enriched: dead-lettered, never silently changed.
    for bad in [&br#""jane@acme.com""#[..], br#"[{"email":"jane@acme.com"}]"#, b"42"] {
        records.push((Some("bad".into()), bad.to_vec(), headers_of(0)));
    }
    kafka::produce_with_headers(&topics.input, 3, &records).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.output.mode = OutputMode::Enrich;
    cfg.output.key = OutputKey::Input;
    cfg.output.forward_headers = true;
    cfg.output.dead_letter_headers = DeadLetterHeaders::Connect;
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("enrich_mode", 0.0));
    audit.assert_nothing_lost("enrich mode");

    // Inputs by their coordinates.
    let inputs: HashMap<(i32, i64), kafka::Rec> = kafka::read_all(&topics.input, 3)
        .into_iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let source = |r: &kafka::Rec| -> (i32, i64) {
        (
            r.header("identify.source.partition").parse().unwrap(),
            r.header("identify.source.offset").parse().unwrap(),
        )
    };
    let outputs = kafka::read_all(&topics.output, 3);
    assert_eq!(outputs.len(), N, "one output per enrichable event");
    let mut partitions_of_key: HashMap<Vec<u8>, HashSet<i32>> = HashMap::new();
    for out in &outputs {
        let input = &inputs[&source(out)];
        // The event, unchanged, plus the result at /crustdata.
        let mut got = out.json();
        let result = got
            .as_object_mut()
            .unwrap()
            .remove("crustdata")
            .expect("result at /crustdata");
        let mut want: Value = serde_json::from_slice(input.value.as_deref().unwrap()).unwrap();
        want.as_object_mut().unwrap().remove("crustdata");
        assert_eq!(got, want, "the event is unchanged");
        let email = want["email"].as_str().unwrap().trim().to_lowercase();
        assert_eq!(result["identifier"], email.as_str());
        assert_eq!(result["identifier_type"], "business_email");
        for field in ["matched", "matches", "batch_id", "resolved_at"] {
            assert!(result.get(field).is_some(), "result has {field}");
        }
        assert!(result.get("source").is_none(), "the source is in the headers");
        // The members of the input come first, in their order, byte for byte.
        let raw_in = std::str::from_utf8(input.value.as_deref().unwrap()).unwrap();
        let raw_out = std::str::from_utf8(out.value.as_deref().unwrap()).unwrap();
        if !raw_in.contains("crustdata") {
            assert!(raw_out.starts_with(raw_in.trim_end_matches('}')), "{raw_out}");
        }
        // The input's key, and so one output partition per key.
        assert_eq!(out.key, input.key);
        partitions_of_key
            .entry(out.key.clone().unwrap())
            .or_default()
            .insert(out.partition);
        // Forwarded headers byte for byte, then ours, none twice.
        let forwarded: HeaderList = input
            .raw_headers
            .iter()
            .filter(|(k, _)| !k.starts_with("identify."))
            .cloned()
            .collect();
        assert_eq!(&out.raw_headers[..forwarded.len()], &forwarded[..]);
        let ours: Vec<&str> = out.raw_headers[forwarded.len()..]
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            ours,
            [
                "identify.source.topic",
                "identify.source.partition",
                "identify.source.offset",
                "identify.batch_id"
            ]
        );
        assert_ne!(out.header("identify.batch_id"), "forged");
    }
    for (key, parts) in &partitions_of_key {
        assert_eq!(
            parts.len(),
            1,
            "key {:?} in one partition",
            String::from_utf8_lossy(key)
        );
    }

    let dead = kafka::read_all(&topics.dlq, 1);
    assert_eq!(dead.len(), 3, "the three values that are not objects");
    for d in &dead {
        assert_eq!(d.header("identify.error.reason"), "not_enrichable");
        assert!(d.header("identify.error.message").contains("not an object"));
        assert_eq!(d.header("__connect.errors.topic"), topics.input);
        assert_eq!(d.header("__connect.errors.exception.class.name"), "not_enrichable");
        assert_eq!(d.header("__connect.errors.stage"), "VALUE_CONVERTER");
        let input = &inputs[&source(d)];
        assert_eq!(d.value, input.value, "the dead letter holds the value unchanged");
        assert_eq!(d.key, input.key);
    }
    let stats = sim.stats();
    assert_eq!(
        stats.unique_identifiers_submitted,
        (0..N)
            .map(|i| event(i)["email"].as_str().unwrap().trim().to_lowercase())
            .collect::<HashSet<_>>()
            .len() as u64,
        "nothing submitted for the values that cannot be enriched"
    );

    let (ok, read, invalid) = downstream_consumer(&topics.output, "enrich");
    assert!(
        ok && invalid == 0,
        "the downstream consumer accepts every enriched record"
    );
    assert_eq!(read, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_downstream_consumer_reads_result_mode() {
    const N: usize = 600;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("result-mode", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "result")).await;
    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    connector.stop().await;
    common::audit(&topics).assert_nothing_lost("result mode");
    for out in kafka::read_all(&topics.output, 3) {
        let v = out.json();
        assert_eq!(
            out.key.as_deref(),
            v["identifier"].as_str().map(str::as_bytes),
            "keyed by identifier"
        );
        assert!(v["source"]["offset"].is_i64(), "result mode keeps its source member");
    }
    let (ok, read, invalid) = downstream_consumer(&topics.output, "result");
    assert!(
        ok && invalid == 0,
        "the downstream consumer accepts every result record"
    );
    assert_eq!(read, N);
}

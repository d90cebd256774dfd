//! `identify-connector lookup` on a real broker: answers for a matched, an
//! unmatched and an unknown identifier with the connector running (over
//! its socket), stopped (the local store) and from the store topic alone,
//! all alike; exit status 0 only when every identifier was resolved; bad
//! input gets one clear message.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{kafka, Topics, KEY};
use serde_json::Value;

/// Runs the tool; returns (exit code, answers by input, stderr).
fn lookup(cfg: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_identify-connector"))
        .arg("lookup")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("CRUSTDATA_API_KEY", KEY)
        .output()
        .expect("the tool runs");
    let answers = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        answers,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The answers' (status, batch id, paid, source) in order.
fn summary(answers: &[Value]) -> Vec<(String, String, bool, String)> {
    answers
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap().to_string(),
                a["batch_id"].as_str().unwrap_or("").to_string(),
                a["paid"].as_bool().unwrap(),
                a["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answers_alike_from_the_running_connector_its_local_store_and_the_topic() {
    let sim = common::start_sim(|c| c.match_rate = 0.5).await;
    let topics = Topics::create("lookup", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("connector.toml");
    std::fs::write(&cfg, common::toml_for(&topics, &sim.base_url())).unwrap();
    kafka::produce(&topics.input, 3, &common::emails(40, "look")).await;
    let connector = common::connector_proc(&cfg, &dir.path().join("connector.log"), "warn", &[]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let outputs = kafka::read_all(&topics.output, 3);
    let pick = |matched: bool| {
        let r = outputs
            .iter()
            .find(|r| r.json()["matched"] == matched)
            .expect("both kinds");
        let j = r.json();
        (
            j["identifier"].as_str().unwrap().to_string(),
            j["batch_id"].as_str().unwrap().to_string(),
        )
    };
    let (hit, hit_job) = pick(true);
    let (miss, miss_job) = pick(false);
    let unknown = "never.seen@lookup.example.com";
    // Asked as a person would type it: upper case, spaces.
    let asked = format!("  {}  ", hit.to_uppercase());
    let expect = |source: &str| {
        vec![
            ("matched".to_string(), hit_job.clone(), true, source.to_string()),
            ("unmatched".to_string(), miss_job.clone(), false, source.to_string()),
            ("unknown".to_string(), String::new(), false, source.to_string()),
        ]
    };

    let (code, running, err) = lookup(&cfg, &[&asked, &miss, unknown]);
    assert_eq!(code, 1, "one was never resolved: {err}");
    assert_eq!(summary(&running), expect("connector"), "{running:?}");
    assert_eq!(running[0]["identifier"], hit.as_str(), "normalised");
    assert!(running[0]["person_id"].is_number(), "{}", running[0]);
    assert!(running[0]["name"].is_string(), "{}", running[0]);
    assert!(running[0]["resolved_at"].is_string());
    let (code, _, err) = lookup(&cfg, &[&hit, &miss]);
    assert_eq!(code, 0, "all resolved: {err}");

    assert!(connector.terminate(Duration::from_secs(60)).success());
    let (code, stopped, err) = lookup(&cfg, &[&asked, &miss, unknown]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&stopped), expect("local_store"));
    assert_eq!(stopped[0]["name"], running[0]["name"]);

    let (code, topic, err) = lookup(&cfg, &["--from-topic", &asked, &miss, unknown]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(summary(&topic), expect("topic"));
    assert_eq!(topic[0]["person_id"], running[0]["person_id"]);

    // Bad input.
    let (code, _, err) = lookup(&cfg, &[]);
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "lookup: name at least one identifier to look up");
    let (code, invalid, _) = lookup(&cfg, &["not an email"]);
    assert_eq!(code, 1);
    assert_eq!(invalid[0]["status"], "invalid");
}

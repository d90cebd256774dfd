//! `identify-connector redrive` on a real broker: 500 dead letters of two
//! reasons made by the connector itself; re-driving one reason sends
//! exactly those back to the input topic, once, with their original key,
//! bytes and headers; a second run re-drives nothing; the other reason
//! then goes too; `--dry-run` and bad input change nothing; re-driven
//! records are resolved by the connector like any other.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{kafka, ConnectorProc, Topics, KEY};
use testkit::kafka::HeaderList;

const EACH: usize = 250;

/// Runs the tool; returns (exit code, stdout, stderr).
fn redrive(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_identify-connector"))
        .arg("redrive")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env("CRUSTDATA_API_KEY", KEY)
        .output()
        .expect("the tool runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn total(topic: &str, partitions: i32) -> i64 {
    kafka::end_offsets(topic, partitions).iter().sum()
}

/// Records in the input topic (its end offsets also count the markers of
/// the tool's transactions).
fn inputs(topics: &Topics) -> usize {
    kafka::read_all(&topics.input, 3).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_re_driven_once_by_reason_with_their_bytes_key_and_headers() {
    let sim = common::start_sim(|c| c.job_failure_rate = 1.0).await;
    let topics = Topics::create("redrive", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("connector.toml");
    let toml = common::toml_for(&topics, &sim.base_url()).replacen("[api]\n", "[api]\nmax_job_attempts = 1\n", 1)
        + "[output]\nforward_headers = true\n";
    std::fs::write(&cfg, toml).unwrap();
    // Half the input is not JSON (not_parseable); the other half are
    // emails whose jobs all fail (job_failed). Each record has its own key
    // and a header of its own.
    let mut input: Vec<(Option<String>, Vec<u8>, HeaderList)> = Vec::new();
    for i in 0..EACH {
        let h = vec![("tenant".to_string(), Some(format!("t-bad-{i}").into_bytes()))];
        input.push((Some(format!("bad-{i}")), format!("not json {i}").into_bytes(), h));
        let h = vec![("tenant".to_string(), Some(format!("t-fail-{i}").into_bytes()))];
        input.push((
            Some(format!("fail-{i}")),
            common::event(&format!("fail{i}@redrive.example.com")),
            h,
        ));
    }
    kafka::produce_with_headers(&topics.input, 3, &input).await;
    let log = dir.path().join("connector-1.log");
    let connector = common::connector_proc(&cfg, &log, "warn", &[]);
    kafka::wait_for("500 dead letters", Duration::from_secs(120), || {
        total(&topics.dlq, 1) >= 2 * EACH as i64
    })
    .await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    assert!(connector.terminate(Duration::from_secs(60)).success());
    let reasons = common::audit(&topics).dlq_reasons();
    assert_eq!(reasons.get("job_failed"), Some(&EACH), "{reasons:?}");
    assert_eq!(reasons.get("not_parseable"), Some(&EACH), "{reasons:?}");
    let input_before = inputs(&topics);

    // Bad input: one clear message each, exit 2, nothing changed.
    let (code, _, err) = redrive(&cfg, &["--reason", "timeout"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--reason \"timeout\" is not a dead-letter reason"),
        "{err}"
    );
    let (code, _, err) = redrive(
        &cfg,
        &["--since", "2026-12-07T10:00:00Z", "--until", "2026-12-07T09:00:00Z"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not before --until"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");

    // A dry run says what it would do and writes nothing.
    let (code, out, err) = redrive(&cfg, &["--reason", "job_failed", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("would re-drive: {EACH}")), "{out}");
    assert_eq!(inputs(&topics), input_before, "--dry-run changes nothing");

    // One reason: exactly its letters, once, as they came.
    let (code, out, err) = redrive(&cfg, &["--reason", "job_failed"]);
    assert_eq!(code, 0, "{err}");
    println!("first run: {out}");
    assert!(out.contains(&format!("selected: {EACH}, re-driven: {EACH}")), "{out}");
    let all = kafka::read_all(&topics.input, 3);
    let back: Vec<_> = all
        .iter()
        .filter(|r| r.headers.contains_key("identify.redrive"))
        .collect();
    assert_eq!(back.len(), EACH);
    for r in &back {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let i: usize = key
            .strip_prefix("fail-")
            .expect("only job_failed letters")
            .parse()
            .unwrap();
        let original = &input[2 * i + 1];
        assert_eq!(r.value.as_deref(), Some(original.1.as_slice()), "the original bytes");
        assert_eq!(r.header("tenant"), format!("t-fail-{i}"), "the original headers");
        assert!(r
            .header("identify.redrive.from")
            .starts_with(&format!("{}/", topics.dlq)));
        assert!(
            !r.headers.contains_key("identify.error.reason"),
            "no dead-letter headers"
        );
    }
    let (code, out, _) = redrive(&cfg, &["--reason", "job_failed"]);
    assert_eq!(code, 0);
    assert!(out.contains("re-driven: 0, skipped (already_redriven): 250"), "{out}");
    assert_eq!(inputs(&topics), input_before + EACH, "nothing re-driven twice");

    // The other reason's letters were left for this run.
    let (code, out, _) = redrive(&cfg, &["--class", "input"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("re-driven: {EACH}")), "{out}");
    assert_eq!(inputs(&topics), input_before + 2 * EACH);

    // A record in the dead-letter topic that is not a dead letter of ours.
    kafka::produce(&topics.dlq, 1, &[(None, b"stray".to_vec())]).await;
    let (code, _, err) = redrive(&cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no identify.error.reason header"), "{err}");
    assert_eq!(inputs(&topics), input_before + 2 * EACH, "nothing changed");

    // The API recovered: the re-driven emails are resolved like any other
    // record (the re-driven bad values are dead letters again).
    sim.update(|c| c.job_failure_rate = 0.0);
    let log = dir.path().join("connector-2.log");
    let connector: ConnectorProc = common::connector_proc(&cfg, &log, "warn", &[]);
    // (Not `wait_done`: the input's end offsets count the transaction
    // markers of the tool, which no consumer commits past.)
    kafka::wait_for(
        "the re-driven records resolved or dead-lettered",
        Duration::from_secs(120),
        || total(&topics.output, 3) >= EACH as i64 && total(&topics.dlq, 1) > 3 * EACH as i64,
    )
    .await;
    assert!(connector.terminate(Duration::from_secs(60)).success());
    let outputs = kafka::read_all(&topics.output, 3);
    assert_eq!(outputs.len(), EACH);
    assert!(outputs.iter().all(|r| r.header("tenant").starts_with("t-fail-")));
}

//! Security: the API key never leaks (trace logs in JSON, `/metrics`, error
//! messages, `Debug` of the configuration), result files only come from
//! allowed hosts, every HTTP request has a timeout, and Kafka TLS/SASL
//! properties reach librdkafka. Webhook tokens and body limits are covered
//! in `tests/operations.rs`; the gzip bomb in `src/jobs/results.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use identify_connector::config::Config;
use testkit::free_port;

const SASL_PASSWORD: &str = "sasl-pw-7c1e";

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_absent_from_trace_logs_metrics_errors_and_debug() {
    // A refused key first (the 401 phase), then the right one.
    let sim = common::start_sim(|c| c.api_keys = vec!["another-key".into()]).await;
    let topics = Topics::create("secrets", 2).await;
    kafka::produce(&topics.input, 2, &common::emails(200, "secret")).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = common::toml_for(&topics, &sim.base_url())
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
        + "[log]\nformat = \"json\"\n";
    let cfg = write(dir.path(), "connector.toml", &toml);
    let log = dir.path().join("stderr.log");
    let proc = common::connector_proc(&cfg, &log, "trace", &[("IDENTIFY_KAFKA__SASL_PASSWORD", SASL_PASSWORD)]);
    kafka::wait_for("401s", Duration::from_secs(30), || sim.stats().unauthorized_401 >= 2).await;
    let http = format!("http://127.0.0.1:{port}");
    let readyz = reqwest::get(format!("{http}/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    let refused_reason = readyz.text().await.unwrap();
    sim.update(|c| c.api_keys = vec![common::KEY.into()]);
    let started = Instant::now();
    common::wait_done(&topics, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status = proc.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");

    let stderr = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() > 100, "trace logging produced output");
    let json_lines = lines
        .iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(json_lines * 10 >= lines.len() * 9, "logs are JSON");
    assert!(stderr.contains("\"level\":\"TRACE\""), "trace level was on");
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "the 401 phase was logged"
    );
    for (what, text) in [
        ("stderr", stderr.as_str()),
        ("/metrics", metrics.as_str()),
        ("/readyz", refused_reason.as_str()),
    ] {
        assert!(!text.contains(common::KEY), "API key found in {what}");
        assert!(!text.contains(SASL_PASSWORD), "SASL password found in {what}");
    }

    // Debug of the configuration and of the client, and API error messages.
    let mut config = common::config(&topics, &sim.base_url());
    config.kafka.sasl_password = identify_connector::config::Secret::new(SASL_PASSWORD);
    config
        .kafka
        .consumer
        .insert("ssl.key.password".into(), SASL_PASSWORD.into());
    let debug = format!("{config:?} {:#?}", config);
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(common::KEY), "API key in Debug of Config");
    assert!(!debug.contains(SASL_PASSWORD), "password in Debug of Config");
    // (The API client's Debug and errors: a unit test of the client.)

    let audit = common::audit(&topics);
    println!("{}", audit.result_line("security_key_not_logged", elapsed));
    println!(
        "security_key_not_logged: stderr_lines={} bytes={} key_occurrences=0",
        lines.len(),
        stderr.len()
    );
    audit.assert_nothing_lost("security: key not logged");
}

#[test]
fn api_key_absent_from_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.toml",
        "[kafka]\ninput_topics = [\"in\"]\noutput_topic = \"in\"\n[api]\nbase_url = \"ftp://x\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_identify-connector"))
        .arg("--config")
        .arg(&cfg)
        .arg("--check")
        .env("CRUSTDATA_API_KEY", common::KEY)
        .env("IDENTIFY_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("api.base_url"), "{text}");
    assert!(!text.contains(common::KEY), "{text}");
    assert!(!text.contains(SASL_PASSWORD), "{text}");
    let err = Config::from_toml("[api]\nkey = 42\n").unwrap_err().to_string();
    assert!(!err.contains(common::KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_url_outside_the_allowlist_is_never_fetched() {
    // The simulator hands out links to a host the connector does not allow
    // (api.base_url is 127.0.0.1; the default allowlist is that host and
    // *.amazonaws.com).
    let sim = common::start_sim(|c| {
        c.match_rate = 1.0;
        c.public_url = Some("http://files.attacker.example:8080".into());
    })
    .await;
    let topics = Topics::create("allowlist", 1).await;
    const N: usize = 50;
    kafka::produce(&topics.input, 1, &common::emails(N, "allow")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.api.max_job_attempts = 2;
    let started = Instant::now();
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    connector.stop().await;
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("security_download_allowlist", elapsed));
    audit.assert_nothing_lost("allowlist");
    assert!(stats.jobs_completed >= 1, "jobs completed with refused links");
    assert_eq!(stats.downloads + stats.download_errors, 0, "no download was attempted");
    assert_eq!(audit.outputs.len(), 0);
    assert_eq!(audit.dlq.len(), N);
    for d in &audit.dlq {
        assert_eq!(d.header("identify.error.reason"), "job_failed");
        let msg = d.header("identify.error.message");
        assert!(msg.contains("refused download URL"), "{msg}");
        assert!(msg.contains("files.attacker.example"), "{msg}");
        assert!(
            !msg.contains("X-Amz-Signature"),
            "no pre-signed query in messages: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_download_beyond_request_timeout_times_out_and_is_retried() {
    let sim = common::start_sim(|c| {
        c.match_rate = 1.0;
        c.slow_download = Duration::from_secs(4);
    })
    .await;
    let topics = Topics::create("timeout", 1).await;
    const N: usize = 30;
    kafka::produce(&topics.input, 1, &common::emails(N, "timeout")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.api.request_timeout = Duration::from_secs(1);
    cfg.api.max_request_retries = 4;
    cfg.api.max_job_attempts = 3;
    let started = Instant::now();
    let connector = Connector::start(cfg).await;
    let timeouts = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("identify_api_retries_total{"))
            .filter(|l| l.contains(r#"endpoint="download""#) && l.contains(r#"error="timeout""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    kafka::wait_for("a download timeout retried", Duration::from_secs(30), || {
        timeouts(&connector.metrics()) >= 1.0
    })
    .await;
    assert_eq!(
        kafka::end_offsets(&topics.output, 3).iter().sum::<i64>(),
        0,
        "nothing resolved while every download times out"
    );
    // The file server recovers: the retried request succeeds.
    sim.update(|c| c.slow_download = Duration::ZERO);
    common::wait_done(&topics, Duration::from_secs(60)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = connector.metrics();
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("security_request_timeout", elapsed));
    println!(
        "security_request_timeout: download_timeouts_retried={}",
        timeouts(&metrics)
    );
    audit.assert_nothing_lost("request timeout");
    assert_eq!(audit.outputs.len(), N, "resolved after the retry");
    assert!(audit.dlq.is_empty());
}

/// Runs the binary with extra Kafka properties; returns (exit code, stderr).
fn run_with_kafka_props(section: &str, props: &[(&str, &str)], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[kafka]\ninput_topics = [\"tls-in\"]\noutput_topic = \"tls-out\"\ndead_letter_topic = \"tls-dlq\"\n\
         [kafka.{section}]\n"
    );
    for (k, v) in props {
        toml.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    toml.push_str("[api]\nbase_url = \"http://127.0.0.1:9\"\n[server]\nlisten = \"127.0.0.1:0\"\n");
    let cfg = write(dir.path(), "tls.toml", &toml);
    let log = dir.path().join("stderr.log");
    let proc = common::connector_proc(&cfg, &log, "warn", env);
    let status = proc.wait_exit(Duration::from_secs(30));
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn kafka_security_properties_reach_librdkafka() {
    // An invalid value: refused by librdkafka at start-up, named in the error.
    for section in ["consumer", "producer"] {
        let (code, stderr) = run_with_kafka_props(section, &[("security.protocol", "tls-please")], &[]);
        assert_eq!(code, Some(1), "{section}: {stderr}");
        assert!(
            stderr.contains("security.protocol") && stderr.contains("tls-please"),
            "{section}: the error names the property: {stderr}"
        );
        println!(
            "kafka_tls_passthrough[{section}]: {}",
            stderr.lines().last().unwrap_or("")
        );
    }
    // TLS settings are applied: a missing CA file fails the start.
    let (code, stderr) = run_with_kafka_props(
        "consumer",
        &[("security.protocol", "ssl"), ("ssl.ca.location", "/nonexistent/ca.pem")],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ssl.ca.location"), "{stderr}");
    // SASL settings too, and the password (from the environment) never shows.
    let (code, stderr) = run_with_kafka_props(
        "producer",
        &[("security.protocol", "sasl_ssl"), ("sasl.mechanisms", "NO-SUCH-MECH")],
        &[("IDENTIFY_KAFKA__SASL_PASSWORD", SASL_PASSWORD)],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("NO-SUCH-MECH") || stderr.contains("sasl.mechanism"),
        "{stderr}"
    );
    assert!(!stderr.contains(SASL_PASSWORD), "{stderr}");
}

//! Traces in a real tracing backend: Jaeger all-in-one (built by
//! `scripts/jaeger.sh`, its path in `JAEGER_BIN`) receives the connector's
//! spans over OTLP/HTTP, and its query API is read back: one trace per job
//! with its submit, poll, download and publish spans and attributes; a
//! record that carried a `traceparent` has its span in that trace, linked
//! to its job, and its output carries the span's `traceparent`. With a
//! collector that hangs nothing blocks: every record is resolved, the spans
//! that find the export queue full are counted, and the connector stops
//! within its bounds.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{kafka, Topics};
use serde_json::Value;

const QUERY: &str = "http://127.0.0.1:16686";

/// Jaeger all-in-one as a child process, killed on drop.
struct Jaeger(Child);

impl Jaeger {
    async fn start(log: &Path) -> Self {
        let bin = std::env::var_os("JAEGER_BIN").map(PathBuf::from).unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
            cache.join("identify-connector/bin/jaeger-1.75.0")
        });
        assert!(
            bin.exists(),
            "{} is missing: build it with scripts/jaeger.sh path (scripts/test.sh does)",
            bin.display()
        );
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(&bin)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let jaeger = Jaeger(child);
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let query = client.get(format!("{QUERY}/api/services")).send().await;
            let otlp = tokio::net::TcpStream::connect("127.0.0.1:4318").await;
            if query.is_ok_and(|r| r.status().is_success()) && otlp.is_ok() {
                return jaeger;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Jaeger did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The traces of `service` Jaeger holds.
async fn traces(service: &str) -> Vec<Value> {
    let url = format!("{QUERY}/api/traces?service={service}&limit=1000&lookback=1h");
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["data"].as_array().cloned().unwrap_or_default()
}

fn op(span: &Value) -> &str {
    span["operationName"].as_str().unwrap_or_default()
}

fn tags(span: &Value) -> HashMap<String, Value> {
    span["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["key"].as_str().unwrap().to_string(), t["value"].clone()))
        .collect()
}

/// A fresh run: topics with `n` new emails and `traced` more records that
/// carry a sampled `traceparent`, and the connector's config exporting to
/// `endpoint` as `service`.
async fn run_input(name: &str, n: usize, traced: &[(String, String)]) -> Topics {
    let topics = Topics::create(name, 3).await;
    kafka::produce(&topics.input, 3, &common::emails(n, &format!("{name}-"))).await;
    let with_headers: Vec<_> = traced
        .iter()
        .enumerate()
        .map(|(i, (trace, parent))| {
            let header = format!("00-{trace}-{parent}-01").into_bytes();
            (
                Some(format!("traced-{i}")),
                common::event(&format!("traced{i}-{name}@tracing{i}.com")),
                vec![("traceparent".to_string(), Some(header))],
            )
        })
        .collect();
    kafka::produce_with_headers(&topics.input, 3, &with_headers).await;
    topics
}

fn config(dir: &Path, topics: &Topics, base_url: &str, endpoint: &str, service: &str) -> PathBuf {
    let toml = format!(
        "{}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"{service}\"\n",
        common::toml_for(topics, base_url)
    );
    let path = dir.join(format!("{service}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn hex(n: usize) -> String {
    (0..n).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_is_a_trace_and_a_traced_record_is_linked_to_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let _jaeger = Jaeger::start(&dir.path().join("jaeger.log")).await;
    let sim = common::start_sim(|_| {}).await;
    let traced: Vec<(String, String)> = (0..5).map(|_| (hex(32), hex(16))).collect();
    let topics = run_input("traces", 3_000, &traced).await;
    let service = kafka::unique("identify-traces");
    let cfg = config(dir.path(), &topics, &sim.base_url(), "http://127.0.0.1:4318", &service);
    let proc = common::connector_proc(&cfg, &dir.path().join("connector.log"), "info", &[]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    // SIGTERM flushes the spans still queued.
    let status = proc.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let audit = common::audit(&topics);
    audit.assert_nothing_lost("traces");
    audit.assert_all_valid_resolved(3_005);

    // Outputs of traced records carry their span's traceparent, in the
    // input's trace.
    let outputs = kafka::read_all(&topics.output, 3);
    let mut record_spans = HashMap::new();
    for (trace, parent) in &traced {
        let out = outputs
            .iter()
            .find(|r| r.headers.get("traceparent").is_some_and(|h| h.contains(trace.as_str())))
            .unwrap_or_else(|| panic!("no output carries trace {trace}"));
        let tp: Vec<&str> = out.header("traceparent").split('-').collect();
        assert_eq!((tp[0], tp[1], tp[3]), ("00", trace.as_str(), "01"), "{tp:?}");
        assert_ne!(tp[2], parent, "the record's own span, a child of the input's");
        record_spans.insert(trace.clone(), (parent.clone(), tp[2].to_string()));
    }
    let untraced = outputs.iter().filter(|r| r.headers.contains_key("traceparent")).count();
    assert_eq!(
        untraced,
        traced.len(),
        "only traced records' outputs carry a traceparent"
    );

    // One trace per job, with its spans and attributes.
    let jobs = sim.stats().submits_accepted as usize;
    let is_job = |t: &&Value| t["spans"].as_array().unwrap().iter().any(|s| op(s) == "job");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = traces(&service).await;
        if all.iter().filter(is_job).count() >= jobs {
            break all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {jobs} job traces in Jaeger",
            all.iter().filter(is_job).count()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let job_traces: Vec<&Value> = all.iter().filter(is_job).collect();
    assert_eq!(job_traces.len(), jobs, "one trace per job");
    let mut job_spans = HashMap::new();
    for t in &job_traces {
        let spans = t["spans"].as_array().unwrap();
        let count = |name: &str| spans.iter().filter(|s| op(s) == name).count();
        let job = spans.iter().find(|s| op(s) == "job").unwrap();
        let tags = tags(job);
        for key in ["job.id", "batch_id", "identifiers", "attempt", "matches", "credits"] {
            assert!(tags.contains_key(key), "job span lacks {key}: {tags:?}");
        }
        assert_eq!(tags["outcome"], "completed");
        assert_eq!(count("submit"), 1, "one submit");
        assert!(count("poll") >= 1, "polls: {}", count("poll"));
        assert!(count("download") >= 1, "downloads: {}", count("download"));
        assert_eq!(count("publish"), 1, "one publish");
        job_spans.insert(job["spanID"].as_str().unwrap().to_string(), t["traceID"].clone());
    }

    // The traced records' spans: children of their input's span, linked to
    // the job that resolved them.
    for (trace, (parent, own)) in &record_spans {
        let t = all
            .iter()
            .find(|t| t["traceID"].as_str() == Some(trace.as_str()))
            .unwrap_or_else(|| panic!("trace {trace} not in Jaeger"));
        let span = t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanID"].as_str() == Some(own.as_str()))
            .expect("the record's span");
        assert_eq!(op(span), "record");
        let refs = span["references"].as_array().unwrap();
        assert!(
            refs.iter()
                .any(|r| r["refType"] == "CHILD_OF" && r["spanID"].as_str() == Some(parent.as_str())),
            "the input's span is its parent: {refs:?}"
        );
        assert!(
            refs.iter()
                .any(|r| r["refType"] == "FOLLOWS_FROM"
                    && r["spanID"].as_str().is_some_and(|s| job_spans.contains_key(s))),
            "linked to a job span: {refs:?}"
        );
        assert!(tags(span).contains_key("waited_ms"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_blocks_nothing_and_its_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(|_| {}).await;
    // Every record traced: far more spans than the export queue holds.
    let traced: Vec<(String, String)> = (0..3_000).map(|_| (hex(32), hex(16))).collect();
    let topics = run_input("traces-down", 3_000, &traced).await;
    // A collector that takes connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming().flatten() {
            held.push(conn);
        }
    });
    let port = testkit::free_port();
    let cfg = config(dir.path(), &topics, &sim.base_url(), &endpoint, "identify-down");
    let toml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(&cfg, toml).unwrap();
    let proc = common::connector_proc(&cfg, &dir.path().join("connector.log"), "warn", &[]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let dropped = testkit::metrics::scrape(&format!("127.0.0.1:{port}"), "identify_spans_dropped_total").await;
    assert!(dropped > 0.0, "spans that found the queue full are counted: {dropped}");
    // The flush of spans that cannot leave is bounded too.
    let status = proc.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let audit = common::audit(&topics);
    audit.assert_nothing_lost("traces-down");
    audit.assert_all_valid_resolved(6_000);
}

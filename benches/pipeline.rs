//! End-to-end benchmarks of the connector against the local Apache Kafka
//! broker and the simulator: backlog drain vs the API floor, job-slot
//! utilization, API requests per job (polling and webhooks), throughput and
//! CPU with an instant API, peak RSS with a 1,000,000-record backlog,
//! end-to-end latency under light load, and credits re-spent after a
//! SIGKILL. The connector runs as a child process (the release binary), so
//! its CPU time and peak RSS are its own.
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench pipeline -- NAME...`
//! with Kafka running and `target/release/identify-connector` built).
//! Scenarios: drain webhooks throughput rss latency recovery (default: all).

#[path = "../tests/common/kafka.rs"]
#[allow(dead_code)]
mod kafka;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use identify_connector::sim::{SimConfig, SimHandle};

const KEY: &str = "bench-key";

struct Run {
    input: String,
    output: String,
    dlq: String,
    group: String,
    partitions: i32,
}

impl Run {
    async fn new(name: &str, partitions: i32) -> Self {
        let r = Run {
            input: kafka::unique(&format!("bench-{name}-in")),
            output: kafka::unique(&format!("bench-{name}-out")),
            dlq: kafka::unique(&format!("bench-{name}-dlq")),
            group: kafka::unique(&format!("bench-{name}")),
            partitions,
        };
        kafka::create_topics(&[(&r.input, partitions), (&r.output, partitions), (&r.dlq, 1)]).await;
        r
    }

    fn config(&self, base_url: &str, port: u16, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
output_topic = "{output}"
dead_letter_topic = "{dlq}"
[api]
base_url = "{base_url}"
requests_per_minute = 60000
[server]
listen = "127.0.0.1:{port}"
{extra}
"#,
            brokers = kafka::bootstrap(),
            group = self.group,
            input = self.input,
            output = self.output,
            dlq = self.dlq,
        );
        let path = std::env::temp_dir().join(format!("{}.toml", self.group));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn committed_all(&self) -> bool {
        let committed = kafka::committed(&self.group, &self.input, self.partitions);
        // An empty partition has nothing to commit (-1).
        committed
            .iter()
            .zip(kafka::end_offsets(&self.input, self.partitions))
            .all(|(c, e)| (*c).max(0) == e)
    }

    /// Every input has its output (or dead letter) acknowledged.
    fn published_all(&self) -> bool {
        let inputs: i64 = kafka::end_offsets(&self.input, self.partitions).iter().sum();
        let outputs: i64 =
            kafka::end_offsets(&self.output, self.partitions).iter().sum::<i64>() + kafka::end_offsets(&self.dlq, 1)[0];
        outputs >= inputs
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connector_bin() -> PathBuf {
    std::env::var_os("CONNECTOR_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/identify-connector"
        ))
    })
}

/// The connector as a child process.
struct Connector {
    child: Child,
    port: u16,
}

impl Connector {
    fn start(config: &PathBuf, port: u16) -> Self {
        let bin = connector_bin();
        assert!(bin.exists(), "{} missing: cargo build --release --bins", bin.display());
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .env("CRUSTDATA_API_KEY", KEY)
            .env("RUST_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start connector");
        Connector { child, port }
    }

    /// (CPU seconds, peak RSS in MiB) so far.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (ticks / 100.0, hwm_kb / 1024.0)
    }

    async fn metric(&self, name: &str) -> f64 {
        let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "connector exit: {status:?}");
    }
}

async fn sim(tune: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig {
        api_keys: vec![KEY.into()],
        ..SimConfig::default()
    };
    tune(&mut cfg);
    SimHandle::start(cfg).await.expect("simulator")
}

/// Fixed 2-second jobs: pending 0, no per-identifier or retrieval time, no jitter.
fn two_second_jobs(c: &mut SimConfig) {
    c.pending_time = Duration::ZERO;
    c.base_time = Duration::from_secs(2);
    c.per_identifier_time = Duration::ZERO;
    c.retrieval_time = Duration::ZERO;
    c.jitter = Duration::ZERO;
}

async fn produce_unique(run: &Run, n: usize, tag: &str) {
    let started = Instant::now();
    let chunk = 100_000;
    for start in (0..n).step_by(chunk) {
        let records: kafka::Records = (start..(start + chunk).min(n))
            .map(|i| {
                (
                    None,
                    format!(r#"{{"email":"{tag}{i}@company{}.com","n":{i}}}"#, i % 997).into_bytes(),
                )
            })
            .collect();
        kafka::produce(&run.input, run.partitions, &records).await;
    }
    eprintln!("produced {n} records in {:.1}s", started.elapsed().as_secs_f64());
}

fn api_requests(s: &identify_connector::sim::SimStats) -> u64 {
    s.submits_accepted + s.submits_rejected_total + s.polls + s.downloads + s.download_errors + s.lists
}

fn report(name: &str, fields: &[(&str, String)]) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {name}: {}", body.join(" "));
}

/// Drains a backlog: waits until every output is published (the drain
/// time), then until the offsets are committed. Returns (drain time since
/// start, mean active jobs while draining, time until the first job was
/// active).
async fn drain(run: &Run, conn: &Connector, limit: Duration) -> (Duration, f64, Duration) {
    let started = Instant::now();
    let (mut samples, mut busy) = (0u64, 0.0);
    let mut first_active = None;
    let mut last_check = Instant::now();
    loop {
        let active = conn.metric("identify_active_jobs").await;
        if active > 0.0 || first_active.is_some() {
            first_active.get_or_insert_with(Instant::now);
            samples += 1;
            busy += active;
        }
        if last_check.elapsed() >= Duration::from_millis(100) {
            last_check = Instant::now();
            if tokio::task::block_in_place(|| run.published_all()) {
                break;
            }
        }
        assert!(started.elapsed() < limit, "not drained within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    let startup = first_active.map_or(Duration::ZERO, |t| t - started);
    while !tokio::task::block_in_place(|| run.committed_all()) {
        assert!(started.elapsed() < limit, "offsets not committed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (drained, if samples > 0 { busy / samples as f64 } else { 0.0 }, startup)
}

async fn bench_drain(webhooks: bool) {
    let n = if webhooks { 15_000 } else { 30_000 };
    let name = if webhooks { "webhooks" } else { "drain" };
    let sim = sim(two_second_jobs).await;
    let run = Run::new(name, 6).await;
    produce_unique(&run, n, name).await;
    let port = free_port();
    let extra = if webhooks {
        format!("[webhook]\npublic_url = \"http://127.0.0.1:{port}\"\n")
    } else {
        String::new()
    };
    let conn = Connector::start(&run.config(&sim.base_url(), port, &extra), port);
    let (elapsed, mean_active, startup) = drain(&run, &conn, Duration::from_secs(600)).await;
    let busy = elapsed - startup;
    let (cpu, rss) = conn.usage();
    conn.stop();
    let stats = sim.stats();
    let jobs = stats.submits_accepted.max(1);
    let floor = (n as f64 / 300.0 / 5.0).ceil() * 2.0;
    report(
        name,
        &[
            ("records", n.to_string()),
            ("drain_s", format!("{:.2}", elapsed.as_secs_f64())),
            ("floor_s", format!("{floor:.0}")),
            ("drain_over_floor", format!("{:.3}", elapsed.as_secs_f64() / floor)),
            ("startup_s", format!("{:.2}", startup.as_secs_f64())),
            (
                "first_job_to_drained_over_floor",
                format!("{:.3}", busy.as_secs_f64() / floor),
            ),
            ("slot_utilization", format!("{:.3}", mean_active / 5.0)),
            ("jobs", jobs.to_string()),
            (
                "api_requests_per_job",
                format!("{:.2}", api_requests(&stats) as f64 / jobs as f64),
            ),
            (
                "status_polls_per_job",
                format!("{:.2}", stats.polls as f64 / jobs as f64),
            ),
            ("rate_limited_429", stats.rate_limited_429.to_string()),
            ("max_concurrent_jobs", stats.max_concurrent_active_jobs.to_string()),
            ("cpu_s", format!("{cpu:.2}")),
            ("peak_rss_mib", format!("{rss:.1}")),
        ],
    );
}

async fn bench_instant(name: &str, n: usize) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let run = Run::new(name, 6).await;
    produce_unique(&run, n, name).await;
    let port = free_port();
    let conn = Connector::start(
        &run.config(&sim.base_url(), port, "[batch]\nlinger = \"100ms\"\n"),
        port,
    );
    let (elapsed, _, _) = drain(&run, &conn, Duration::from_secs(900)).await;
    let (cpu, rss) = conn.usage();
    conn.stop();
    let stats = sim.stats();
    report(
        name,
        &[
            ("records", n.to_string()),
            ("elapsed_s", format!("{:.2}", elapsed.as_secs_f64())),
            ("records_per_s", format!("{:.0}", n as f64 / elapsed.as_secs_f64())),
            ("cpu_s", format!("{cpu:.2}")),
            ("cpu_s_per_1000_records", format!("{:.4}", cpu * 1000.0 / n as f64)),
            ("peak_rss_mib", format!("{rss:.1}")),
            ("jobs", stats.submits_accepted.to_string()),
        ],
    );
}

async fn bench_latency() {
    let sim = sim(two_second_jobs).await;
    let run = Run::new("latency", 3).await;
    let port = free_port();
    let conn = Connector::start(&run.config(&sim.base_url(), port, ""), port);
    // Wait until the consumer is in its group and the key is confirmed.
    let t0 = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "connector never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Light load: 10 records a second for 30 seconds.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let n = 300;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 0..n {
        tick.tick().await;
        let value = format!(r#"{{"email":"light{i}@company{}.com"}}"#, i % 7);
        let rec = rdkafka::producer::FutureRecord::<(), str>::to(&run.input)
            .partition(i % run.partitions)
            .payload(&value);
        producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    drain(&run, &conn, Duration::from_secs(120)).await;
    conn.stop();
    // Latency: output record timestamp (set when the connector produced it)
    // minus input record timestamp (set when the event was produced).
    let inputs = read_timestamps(&run.input, run.partitions);
    let mut lat: Vec<f64> = read_timestamps_by_source(&run.output, run.partitions)
        .into_iter()
        .filter_map(|(src, out_ts)| inputs.get(&src).map(|in_ts| (out_ts - in_ts) as f64 / 1000.0))
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    report(
        "latency",
        &[
            ("records", lat.len().to_string()),
            ("linger_s", "2".into()),
            ("job_s", "2".into()),
            ("p50_s", format!("{:.3}", pct(0.5))),
            ("p90_s", format!("{:.3}", pct(0.9))),
            ("p99_s", format!("{:.3}", pct(0.99))),
            ("max_s", format!("{:.3}", lat[lat.len() - 1])),
            (
                "p99_added_over_linger_plus_job_ms",
                format!("{:.0}", (pct(0.99) - 4.0) * 1000.0),
            ),
        ],
    );
}

fn read_timestamps(topic: &str, partitions: i32) -> std::collections::HashMap<(i32, i64), i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::ClientConfig;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("group.id", kafka::unique("ts"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let total: i64 = kafka::end_offsets(topic, partitions).iter().sum();
    let mut out = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.insert((m.partition(), m.offset()), m.timestamp().to_millis().unwrap_or(0));
        }
    }
    out
}

fn read_timestamps_by_source(topic: &str, partitions: i32) -> Vec<((i32, i64), i64)> {
    let ts = read_timestamps(topic, partitions);
    let recs = kafka::read_all(topic, partitions);
    recs.iter()
        .map(|r| {
            let src: (i32, i64) = (
                r.header("identify.source.partition").parse().unwrap(),
                r.header("identify.source.offset").parse().unwrap(),
            );
            (src, ts[&(r.partition, r.offset)])
        })
        .collect()
}

async fn bench_recovery() {
    let sim = sim(|c| {
        two_second_jobs(c);
        c.base_time = Duration::from_secs(4);
    })
    .await;
    let run = Run::new("recovery", 6).await;
    let n = 6_000;
    produce_unique(&run, n, "recovery").await;
    let port = free_port();
    let cfg = run.config(&sim.base_url(), port, "");
    let conn = Connector::start(&cfg, port);
    let t0 = Instant::now();
    while sim.stats().submits_accepted < 5 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut child = conn.child;
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = sim.stats();
    let conn = Connector::start(&cfg, port);
    let (elapsed, _, _) = drain(&run, &conn, Duration::from_secs(300)).await;
    conn.stop();
    let stats = sim.stats();
    let audit_outputs: i64 = kafka::end_offsets(&run.output, run.partitions).iter().sum();
    report(
        "recovery",
        &[
            ("records", n.to_string()),
            (
                "jobs_in_flight_at_kill",
                (at_kill.submits_accepted - at_kill.jobs_completed - at_kill.jobs_failed).to_string(),
            ),
            ("jobs_total", stats.submits_accepted.to_string()),
            (
                "identifiers_resubmitted",
                stats.identifiers_submitted_more_than_once.to_string(),
            ),
            ("credits_charged", stats.credits_charged.to_string()),
            ("credits_respent", stats.credits_recharged.to_string()),
            ("outputs", audit_outputs.to_string()),
            ("restart_to_drained_s", format!("{:.1}", elapsed.as_secs_f64())),
        ],
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all = ["drain", "webhooks", "throughput", "rss", "latency", "recovery"];
    let chosen: Vec<&str> = if args.is_empty() {
        all.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in chosen {
        eprintln!("== {name}");
        match name {
            "drain" => bench_drain(false).await,
            "webhooks" => bench_drain(true).await,
            "throughput" => bench_instant("throughput", 200_000).await,
            "rss" => bench_instant("rss", 1_000_000).await,
            "latency" => bench_latency().await,
            "recovery" => bench_recovery().await,
            other => panic!("unknown scenario {other}; one of {all:?}"),
        }
    }
}

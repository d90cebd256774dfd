//! What every scenario shares: its topics and connector configuration, the
//! connector as a child process, the simulator, producing a backlog, and
//! draining it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crustdata_sim::{SimConfig, SimHandle, SimStats};
use testkit::{kafka, ConnectorProc};

pub const KEY: &str = "bench-key";

/// A consumer group reading a run's input: its id, its output topic and
/// its store topic.
pub struct Group<'a> {
    pub id: &'a str,
    pub output: &'a str,
    pub store_topic: &'a str,
}

pub struct Run {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
    pub marks: kafka::Watermarks,
    /// Extra lines of the `[kafka]` section (e.g. `exactly_once = true`).
    pub kafka_extra: String,
    /// Extra lines of the `[api]` section. Empty: the shipped defaults
    /// (`requests_per_minute = 600` among them); a scenario that changes
    /// one says so in its report.
    pub api_extra: String,
}

impl Run {
    pub async fn new(name: &str, partitions: i32) -> Self {
        let r = Run {
            input: kafka::unique(&format!("bench-{name}-in")),
            output: kafka::unique(&format!("bench-{name}-out")),
            dlq: kafka::unique(&format!("bench-{name}-dlq")),
            group: kafka::unique(&format!("bench-{name}")),
            partitions,
            marks: kafka::Watermarks::new(),
            kafka_extra: String::new(),
            api_extra: String::new(),
        };
        kafka::create_topics(&[(&r.input, partitions), (&r.output, partitions), (&r.dlq, 1)]).await;
        r
    }

    /// Where this run's connector keeps its local store.
    pub fn store_dir(&self) -> PathBuf {
        std::env::temp_dir().join("identify-bench").join(&self.group)
    }

    pub fn config(&self, base_url: &str, port: u16, extra: &str) -> PathBuf {
        self.config_in(base_url, port, extra, &self.store_dir())
    }

    /// The configuration with the local store in `store`.
    pub fn config_in(&self, base_url: &str, port: u16, extra: &str, store: &Path) -> PathBuf {
        let group = Group {
            id: &self.group,
            output: &self.output,
            store_topic: &format!("{}.identify-cache", self.group),
        };
        self.config_for(base_url, port, extra, store, &group)
    }

    /// The configuration of consumer `group` over this run's input.
    pub fn config_for(&self, base_url: &str, port: u16, extra: &str, store: &Path, group: &Group<'_>) -> PathBuf {
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
output_topic = "{output}"
dead_letter_topic = "{dlq}"
{kafka_extra}
[api]
base_url = "{base_url}"
{api_extra}
[server]
listen = "127.0.0.1:{port}"
[cache]
dir = "{store}"
topic = "{store_topic}"
{extra}
"#,
            store = store.display(),
            brokers = kafka::bootstrap(),
            group = group.id,
            output = group.output,
            store_topic = group.store_topic,
            input = self.input,
            dlq = self.dlq,
            kafka_extra = self.kafka_extra,
            api_extra = self.api_extra,
        );
        let path = std::env::temp_dir().join(format!("{}-{port}.toml", group.id));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn committed_all(&self) -> bool {
        let committed = kafka::committed(&self.group, &self.input, self.partitions);
        // An empty partition has nothing to commit (-1).
        committed
            .iter()
            .zip(self.marks.end_offsets(&self.input, self.partitions))
            .all(|(c, e)| (*c).max(0) == e)
    }

    /// Every input has its output (or dead letter) acknowledged.
    pub fn published_all(&self) -> bool {
        let m = &self.marks;
        let inputs: i64 = m.end_offsets(&self.input, self.partitions).iter().sum();
        let outputs: i64 =
            m.end_offsets(&self.output, self.partitions).iter().sum::<i64>() + m.end_offsets(&self.dlq, 1)[0];
        outputs >= inputs
    }
}

fn connector_bin() -> PathBuf {
    std::env::var_os("CONNECTOR_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/identify-connector"
        ))
    })
}

/// The connector as a child process, with its HTTP port.
pub struct Connector {
    pub proc: ConnectorProc,
    pub port: u16,
    http: reqwest::Client,
}

impl Connector {
    pub fn start(config: &Path, port: u16) -> Self {
        let bin = connector_bin();
        assert!(bin.exists(), "{} missing: cargo build --release --bins", bin.display());
        let log = config.with_extension("log");
        let rust_log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
        let proc = ConnectorProc::start(&bin, config, &log, &rust_log, &[("CRUSTDATA_API_KEY", KEY)]);
        Connector {
            proc,
            port,
            http: reqwest::Client::new(),
        }
    }

    /// (CPU seconds, peak RSS in MiB) so far.
    pub fn usage(&self) -> (f64, f64) {
        self.proc.usage()
    }

    pub async fn metric(&self, name: &str) -> f64 {
        testkit::metrics::scrape_with(&self.http, &format!("127.0.0.1:{}", self.port), name).await
    }

    /// SIGTERM; the connector must exit cleanly.
    pub fn stop(self) {
        let status = self.proc.terminate(Duration::from_secs(120));
        assert!(status.success(), "connector exit: {status:?}");
    }
}

pub async fn sim(tune: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig {
        api_keys: vec![KEY.into()],
        ..SimConfig::default()
    };
    tune(&mut cfg);
    SimHandle::start(cfg).await.expect("simulator")
}

/// An API budget raised out of the way, for the scenarios that measure the
/// connector itself against an instant API (throughput, memory, the
/// cache-hit warm-up): their reports say so.
pub const RAISED_BUDGET: &str = "requests_per_minute = 60000";

/// Fixed 2-second jobs: pending 0, no per-identifier or retrieval time, no jitter.
pub fn two_second_jobs(c: &mut SimConfig) {
    c.pending_time = Duration::ZERO;
    c.base_time = Duration::from_secs(2);
    c.per_identifier_time = Duration::ZERO;
    c.retrieval_time = Duration::ZERO;
    c.jitter = Duration::ZERO;
}

pub async fn produce_unique(run: &Run, n: usize, tag: &str) {
    produce_keyed(run, n, tag, 0).await;
}

/// [`produce_unique`] with `keys` keys (none when 0), each on one partition
/// (the key of record `i` has the index of `i`'s partition modulo the
/// partition count) and its records spread over the whole backlog.
pub async fn produce_keyed(run: &Run, n: usize, tag: &str, keys: usize) {
    let parts = run.partitions as usize;
    let per_partition = (keys / parts).max(1);
    let key = |i: usize| (keys > 0).then(|| format!("user-{}", i % parts + parts * ((i / parts) % per_partition)));
    let started = Instant::now();
    let chunk = 100_000;
    for start in (0..n).step_by(chunk) {
        let records: kafka::Records = (start..(start + chunk).min(n))
            .map(|i| {
                (
                    key(i),
                    format!(r#"{{"email":"{tag}{i}@company{}.com","n":{i}}}"#, i % 997).into_bytes(),
                )
            })
            .collect();
        kafka::produce(&run.input, run.partitions, &records).await;
    }
    eprintln!("produced {n} records in {:.1}s", started.elapsed().as_secs_f64());
}

pub fn api_requests(s: &SimStats) -> u64 {
    s.submits_accepted + s.submits_rejected_total + s.polls + s.downloads + s.download_errors + s.lists
}

pub fn report(name: &str, fields: &[(&str, String)]) {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {name}: {}", body.join(" "));
}

/// Drains a backlog: waits until every output is published (the drain
/// time), then until the offsets are committed. Returns (drain time since
/// start, mean active jobs while draining, time until the first job was
/// active).
pub async fn drain(run: &Run, conn: &Connector, limit: Duration) -> (Duration, f64, Duration) {
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

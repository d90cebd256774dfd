//! Shared helpers of the integration tests: the real local broker, the
//! simulator started in-process, and the connector started in-process.
#![allow(dead_code)]

pub mod kafka;
pub mod proc;

use std::time::Duration;

use identify_connector::config::Config;
use identify_connector::pipeline::{self, Running};
use identify_connector::sim::{SimConfig, SimHandle};
use tokio::sync::oneshot;

/// The key the simulator accepts in tests.
pub const KEY: &str = "test-key-3f9a";

/// A simulator with fast jobs (about half a second).
pub async fn start_sim(tune: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig {
        api_keys: vec![KEY.into()],
        pending_time: Duration::from_millis(50),
        base_time: Duration::from_millis(300),
        per_identifier_time: Duration::from_micros(500),
        retrieval_time: Duration::from_millis(200),
        jitter: Duration::from_millis(200),
        ..SimConfig::default()
    };
    tune(&mut cfg);
    SimHandle::start(cfg).await.expect("simulator starts")
}

/// Topics of one test.
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
    pub partitions: i32,
}

impl Topics {
    /// Creates fresh input, output and dead-letter topics.
    pub async fn create(name: &str, partitions: i32) -> Self {
        let t = Topics {
            input: kafka::unique(&format!("{name}-in")),
            output: kafka::unique(&format!("{name}-out")),
            dlq: kafka::unique(&format!("{name}-dlq")),
            group: kafka::unique(&format!("{name}-group")),
            partitions,
        };
        kafka::create_topics(&[(&t.input, partitions), (&t.output, 3), (&t.dlq, 1)]).await;
        t
    }
}

/// A connector configuration file for `topics` against the simulator at
/// `base_url` (the API key comes from `CRUSTDATA_API_KEY`).
pub fn toml_for(topics: &Topics, base_url: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
output_topic = "{output}"
dead_letter_topic = "{dlq}"
commit_interval = "200ms"
rebalance_drain_timeout = "3s"
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[batch]
linger = "300ms"
[api]
base_url = "{base_url}"
poll_initial = "200ms"
poll_max = "2s"
max_backoff = "2s"
[server]
listen = "127.0.0.1:0"
[shutdown]
timeout = "20s"
"#,
        brokers = kafka::bootstrap(),
        group = topics.group,
        input = topics.input,
        output = topics.output,
        dlq = topics.dlq,
    )
}

/// A connector configuration for `topics` against the simulator at `base_url`.
pub fn config(topics: &Topics, base_url: &str) -> Config {
    let toml = toml_for(topics, base_url).replacen("[api]\n", &format!("[api]\nkey = \"{KEY}\"\n"), 1);
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config: {e}\n{toml}"))
}

/// A connector running in-process, stopped by `stop()`.
pub struct Connector {
    pub running: Running,
    stop: oneshot::Sender<()>,
}

impl Connector {
    pub async fn start(cfg: Config) -> Self {
        let (stop, rx) = oneshot::channel::<()>();
        let running = pipeline::start(cfg, async {
            let _ = rx.await;
        })
        .await
        .expect("connector starts");
        Connector { running, stop }
    }

    pub fn metrics(&self) -> String {
        self.running.metrics.render()
    }

    /// Graceful shutdown; panics if it fails.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.running.wait())
            .await
            .expect("connector stops within 60 s")
            .expect("connector stops cleanly");
    }
}

/// Reads a counter or gauge (summing every series of that name).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An event value carrying `email`.
pub fn event(email: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"email": email, "source": "test"})).unwrap()
}

/// `n` events with distinct emails (`{tag}{i}@example{i % 13}.com`).
pub fn emails(n: usize, tag: &str) -> kafka::Records {
    (0..n)
        .map(|i| (None, event(&format!("{tag}{i}@example{}.com", i % 13))))
        .collect()
}

/// Checks the at-least-once bookkeeping after a run: every input record at
/// an offset below the committed offset has an output or a dead letter;
/// returns (outputs, dead letters, duplicates, lost) over all input records.
pub fn audit(topics: &Topics) -> Audit {
    let ends = kafka::end_offsets(&topics.input, topics.partitions);
    let outputs = kafka::read_all(&topics.output, 3);
    let dlq = kafka::read_all(&topics.dlq, 1);
    let mut seen = std::collections::HashMap::<(i32, i64), u32>::new();
    for r in outputs.iter().chain(dlq.iter()) {
        assert_eq!(r.header("identify.source.topic"), topics.input);
        let p: i32 = r.header("identify.source.partition").parse().unwrap();
        let o: i64 = r.header("identify.source.offset").parse().unwrap();
        *seen.entry((p, o)).or_default() += 1;
    }
    let mut lost = Vec::new();
    for p in 0..topics.partitions {
        for o in 0..ends[p as usize] {
            if !seen.contains_key(&(p, o)) {
                lost.push((p, o));
            }
        }
    }
    let duplicates = seen.values().map(|n| (n - 1) as usize).sum();
    Audit {
        inputs: ends.iter().sum::<i64>() as usize,
        outputs,
        dlq,
        duplicates,
        lost,
    }
}

pub struct Audit {
    pub inputs: usize,
    pub outputs: Vec<kafka::Rec>,
    pub dlq: Vec<kafka::Rec>,
    pub duplicates: usize,
    pub lost: Vec<(i32, i64)>,
}

impl Audit {
    /// The one line a chaos, hostile-input or security scenario prints:
    /// `RESULT <scenario>: inputs=N lost=N duplicates=N dead_lettered=N recover_secs=X`.
    pub fn result_line(&self, scenario: &str, recover_secs: f64) -> String {
        format!(
            "RESULT {scenario}: inputs={} lost={} duplicates={} dead_lettered={} recover_secs={recover_secs:.1}",
            self.inputs,
            self.lost.len(),
            self.duplicates,
            self.dlq.len(),
        )
    }

    /// Dead letters counted by their `identify.error.reason` header.
    pub fn dlq_reasons(&self) -> std::collections::BTreeMap<String, usize> {
        let mut by = std::collections::BTreeMap::new();
        for r in &self.dlq {
            *by.entry(r.header("identify.error.reason").to_string()).or_insert(0) += 1;
        }
        by
    }

    /// Panics with the first lost offsets unless nothing was lost.
    pub fn assert_nothing_lost(&self, scenario: &str) {
        assert!(
            self.lost.is_empty(),
            "{scenario}: {} records lost, first {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
    }

    /// Panics unless all `n` inputs were valid and none was dead-lettered.
    pub fn assert_all_valid_resolved(&self, n: usize) {
        assert_eq!(self.inputs, n);
        assert!(self.dlq.is_empty(), "valid emails are never dead-lettered");
    }

    pub fn summary(&self, name: &str) -> String {
        format!(
            "{name}: inputs={} outputs={} dead_lettered={} lost={} duplicates={}",
            self.inputs,
            self.outputs.len(),
            self.dlq.len(),
            self.lost.len(),
            self.duplicates
        )
    }
}

/// Waits until every input record has an output or dead letter and the
/// group has committed up to the end of every partition.
pub async fn wait_done(topics: &Topics, limit: Duration) {
    let ends = kafka::end_offsets(&topics.input, topics.partitions);
    kafka::wait_for("all offsets committed", limit, || {
        kafka::committed(&topics.group, &topics.input, topics.partitions) == ends
    })
    .await;
}

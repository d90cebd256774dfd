//! Shared helpers of the connector's integration tests: the connector's
//! test configuration, the connector in-process and as a child process.
//! Kafka, the simulator and the audit come from `testkit`.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::time::Duration;

use identify_connector::{Config, Running};
use tokio::sync::oneshot;

pub use testkit::{audit, emails, event, kafka, metric, start_sim, wait_done, Audit, ConnectorProc, Topics, KEY};

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
[cache]
dir = "{cache_dir}"
"#,
        cache_dir = cache_dir(topics).display(),
        brokers = kafka::bootstrap(),
        group = topics.group,
        input = topics.input,
        output = topics.output,
        dlq = topics.dlq,
    )
}

/// The local store directory of the connectors of `topics` (one per test;
/// the same across restarts of that test's connector).
pub fn cache_dir(topics: &Topics) -> std::path::PathBuf {
    std::env::temp_dir().join("identify-tests").join(&topics.group)
}

/// The local store directory of member `i` of a group of several
/// connectors (each process needs its own).
pub fn member_dir(topics: &Topics, i: usize) -> String {
    cache_dir(topics).join(format!("member-{i}")).display().to_string()
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
        let running = identify_connector::start(cfg, async {
            let _ = rx.await;
        })
        .await
        .expect("connector starts");
        Connector { running, stop }
    }

    pub fn metrics(&self) -> String {
        self.running.metrics()
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

/// The connector binary as a child process with the simulator's key.
pub fn connector_proc(cfg: &Path, log: &Path, rust_log: &str, env: &[(&str, &str)]) -> ConnectorProc {
    let mut all = vec![("CRUSTDATA_API_KEY", KEY)];
    all.extend_from_slice(env);
    ConnectorProc::start(
        Path::new(env!("CARGO_BIN_EXE_identify-connector")),
        cfg,
        log,
        rust_log,
        &all,
    )
}

/// The body of GET `url`, on a thread of its own (for a `wait_for` check
/// while the test's runtime is busy).
pub fn get_blocking(url: &str) -> String {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            }
        })
    })
    .join()
    .unwrap()
}

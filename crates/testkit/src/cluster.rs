//! The three-broker cluster of `scripts/kafka-local.sh cluster` (a
//! dedicated KRaft controller, replication factor 3, `min.insync.replicas`
//! 2) for the chaos tests: nodes killed and started, partition leaders and
//! in-sync replicas read from the cluster's metadata, and the Toxiproxy
//! proxies in front of each broker's `PROXIED` listener, through which the
//! connector under test can be slowed, reset or cut off alone while the
//! tests' own clients and peers use the `DIRECT` listener.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::toxiproxy::Proxy;

/// Toxiproxy's API of the cluster's proxies.
pub const TOXIPROXY_API: &str = "http://127.0.0.1:28474";
/// The brokers' node ids.
pub const BROKERS: [i32; 3] = [1, 2, 3];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(args: &[&str]) -> String {
    let out = Command::new(root().join("scripts/kafka-local.sh"))
        .arg("cluster")
        .args(args)
        .output()
        .expect("scripts/kafka-local.sh cluster");
    assert!(
        out.status.success(),
        "kafka-local.sh cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One test at a time on the cluster (tests of one binary run in
/// parallel; their faults must not overlap).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster: started when it is not running, every node up, every
/// proxy enabled and without toxics; this test's alone while it holds it.
pub struct Cluster {
    /// The `DIRECT` listeners (the tests' clients and peers).
    pub bootstrap: String,
    /// The `PROXIED` listeners (the connector under fault).
    pub proxied: String,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts what is not running and clears every fault; points the test
    /// kit's own clients (`KAFKA_BOOTSTRAP`) at the cluster.
    pub async fn ensure() -> Self {
        let alone = ONE_AT_A_TIME.lock().await;
        tokio::task::block_in_place(|| script(&["start"]));
        let c = Self {
            bootstrap: script(&["bootstrap"]),
            proxied: script(&["proxied"]),
            _alone: alone,
        };
        // Every broker back (a test that failed may have left one down).
        for n in BROKERS {
            tokio::task::block_in_place(|| script(&["start-node", &n.to_string()]));
        }
        // Every test in a cluster test binary sets the same value.
        std::env::set_var("KAFKA_BOOTSTRAP", &c.bootstrap);
        for n in BROKERS {
            let p = c.proxy(n);
            p.set_enabled(true).await;
            p.clear().await;
        }
        c.wait_brokers(3, Duration::from_secs(60)).await;
        c
    }

    /// The proxy in front of broker `n`'s `PROXIED` listener.
    pub fn proxy(&self, n: i32) -> Proxy {
        Proxy::existing(TOXIPROXY_API, &format!("broker{n}"))
    }

    /// SIGKILLs broker `n`.
    pub fn kill(&self, n: i32) {
        tokio::task::block_in_place(|| script(&["kill", &n.to_string()]));
    }

    /// SIGTERMs broker `n` (a clean shutdown).
    pub fn stop(&self, n: i32) {
        tokio::task::block_in_place(|| script(&["stop-node", &n.to_string()]));
    }

    /// Starts broker `n` and waits until the cluster counts it again.
    pub async fn start(&self, n: i32) {
        tokio::task::block_in_place(|| script(&["start-node", &n.to_string()]));
        let until = Instant::now() + Duration::from_secs(60);
        while !tokio::task::block_in_place(|| self.broker_ids()).contains(&n) {
            assert!(
                Instant::now() < until,
                "broker {n} did not rejoin the cluster within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "cluster-metadata")
            .create()
            .expect("metadata client")
    }

    /// Brokers in the cluster's metadata.
    pub fn brokers(&self) -> usize {
        self.broker_ids().len()
    }

    /// Ids of the brokers in the cluster's metadata.
    pub fn broker_ids(&self) -> Vec<i32> {
        let c = self.consumer();
        c.fetch_metadata(None, Duration::from_secs(5))
            .map_or_else(|_| Vec::new(), |m| m.brokers().iter().map(|b| b.id()).collect())
    }

    async fn wait_brokers(&self, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        while tokio::task::block_in_place(|| self.brokers()) < n {
            assert!(
                Instant::now() < until,
                "the cluster did not count {n} brokers within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Leader and in-sync replicas of each partition of `topic`.
    pub fn partitions(&self, topic: &str) -> Vec<(i32, Vec<i32>)> {
        let c = self.consumer();
        let Ok(m) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            return Vec::new();
        };
        m.topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| (p.leader(), p.isr().to_vec()))
            .collect()
    }

    /// The leader of `topic`'s `partition`, waiting for one (a partition
    /// whose leader just died has none for a moment).
    pub async fn leader(&self, topic: &str, partition: usize) -> i32 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let parts = tokio::task::block_in_place(|| self.partitions(topic));
            if let Some((leader, _)) = parts.get(partition).filter(|(l, _)| *l > 0) {
                return *leader;
            }
            assert!(Instant::now() < until, "{topic}/{partition} has no leader");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every partition of `topic` has `n` in-sync replicas.
    pub async fn wait_in_sync(&self, topic: &str, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let parts = tokio::task::block_in_place(|| self.partitions(topic));
            if !parts.is_empty() && parts.iter().all(|(_, isr)| isr.len() >= n) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{topic}: not {n} in-sync replicas within {limit:?}: {parts:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

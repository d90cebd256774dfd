//! Chaos: the Kafka broker is stopped and started again in the middle of a
//! run (at least once, then with `kafka.exactly_once`); the connector, never
//! restarted, recovers and loses nothing (and, exactly once, duplicates nothing).
//!
//! The broker is a dedicated one started with `scripts/kafka-local.sh` on
//! `KAFKA_CHAOS_PORT` (default 19092, its own state directory), so stopping
//! it cannot break other tests or people using the shared broker on 9092.
//! Setting `KAFKA_CHAOS_PORT=9092` runs the scenario against the shared
//! broker instead. Either way a guard puts the broker back in the state it
//! found it in (running, or stopped if the test started it), even when the
//! test fails. Keep this the only test in this file: cargo runs test
//! binaries one after another, tests within one binary in parallel.
//!
//! Ignored by the README's test command (which kills partition leaders
//! and takes two of three brokers down in tests/cluster.rs instead);
//! `scripts/chaos.sh all` runs it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn script(action: &str, port: u16) -> bool {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(format!("{root}/scripts/kafka-local.sh"))
        .arg(action)
        .current_dir(root)
        .env("KAFKA_PORT", port.to_string())
        .status()
        .unwrap_or_else(|e| panic!("scripts/kafka-local.sh {action}: {e}"));
    status.success()
}

/// Restores the broker's initial state on drop.
struct BrokerGuard {
    port: u16,
    was_running: bool,
}

impl BrokerGuard {
    fn new(port: u16) -> Self {
        let was_running = script("status", port);
        if !was_running && port != 9092 {
            // A dedicated broker starts clean, whatever an interrupted
            // earlier run left in its metadata log.
            assert!(script("wipe", port), "broker on {port} wiped");
        }
        assert!(script("start", port), "broker on {port} starts");
        BrokerGuard { port, was_running }
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.was_running {
            script("start", self.port);
        } else {
            script("stop", self.port);
        }
    }
}

/// Committed offsets, or `None` while the broker cannot answer.
fn try_committed_sum(topics: &Topics) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("group.id", &topics.group)
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..topics.partitions {
        tpl.add_partition(&topics.input, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    Some(
        (0..topics.partitions)
            .map(|p| match got.find_partition(&topics.input, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            })
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scripts/chaos.sh all (the cluster scenarios cover a broker's loss in the README's test command)"]
async fn broker_stop_and_start_mid_run_connector_recovers_without_restart() {
    let port: u16 = std::env::var("KAFKA_CHAOS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19092);
    // The connector's log (and librdkafka's) of the outage, shown if the test
    // fails; `RUST_LOG` overrides the levels.
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "identify_connector=info,librdkafka=info,rdkafka=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let _guard = BrokerGuard::new(port);
    // Every helper (and the connector configuration) uses this broker.
    std::env::set_var("KAFKA_BOOTSTRAP", format!("127.0.0.1:{port}"));
    outage(port, false, "broker_restart").await;
    // The same with outputs and offsets in transactions: a read_committed
    // reader sees no duplicate either.
    outage(port, true, "broker_restart_exactly_once").await;
}

async fn outage(port: u16, exactly_once: bool, scenario: &str) {
    const N: usize = 20_000;

    // Jobs of about 1.3 s: the run lasts well beyond the broker's outage.
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let topics = Topics::create("brokerchaos", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "broker")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.exactly_once = exactly_once;
    let connector = Connector::start(cfg).await;

    kafka::wait_for("first commits", Duration::from_secs(60), || {
        try_committed_sum(&topics).is_some_and(|c| c > 0)
    })
    .await;
    let before = try_committed_sum(&topics).expect("broker answers");
    assert!(before < N as i64, "the outage starts mid-run (committed {before})");

    assert!(script("stop", port), "broker stops");
    let stopped = Instant::now();
    // The outage: the broker stays down while jobs keep finishing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Recovery is timed from the moment the broker is started again (its
    // start-up, about 5 s here, included) until the connector commits again.
    let restarting = Instant::now();
    assert!(script("start", port), "broker starts again");
    println!(
        "broker: down {:.1} s (stop to start), start-up {:.1} s, {before} of {N} committed before",
        (restarting - stopped).as_secs_f64(),
        restarting.elapsed().as_secs_f64()
    );

    // A connector that failed is reported at once, not as a time-out.
    let alive = || assert!(connector.running.live(), "the connector failed; its log is above");
    kafka::wait_for("commits to advance after the restart", Duration::from_secs(120), || {
        alive();
        try_committed_sum(&topics).is_some_and(|c| c > before)
    })
    .await;
    let recover = restarting.elapsed().as_secs_f64();
    kafka::wait_for("every offset committed", Duration::from_secs(180), || {
        alive();
        try_committed_sum(&topics) == Some(N as i64)
    })
    .await;
    let metrics = connector.metrics();
    connector.stop().await;

    let audit = common::audit(&topics);
    println!("{}", audit.result_line(scenario, recover));
    println!(
        "broker: commit_errors={} produce_errors={} rebalances={}",
        common::metric(&metrics, "identify_commit_errors_total"),
        common::metric(&metrics, "identify_produce_errors_total"),
        common::metric(&metrics, "identify_rebalances_total"),
    );
    audit.assert_nothing_lost(scenario);
    audit.assert_all_valid_resolved(N);
    if exactly_once {
        assert_eq!(audit.duplicates, 0, "read_committed sees each output once");
    }
}

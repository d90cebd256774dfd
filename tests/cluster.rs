//! A real cluster (three brokers, a dedicated KRaft controller, replication
//! factor 3, `min.insync.replicas` 2: `scripts/kafka-local.sh cluster`) and
//! real network faults (Toxiproxy in front of each broker and of the
//! simulator). Each scenario asserts the simulator's ledger (no credit
//! charged twice) and an independent consumer's view of the output
//! (nothing lost; with exactly-once, no duplicate):
//! - the leaders of the input, output and store partitions SIGKILLed
//!   during processing, at least once and exactly once;
//! - the connector cut off from every broker for longer than its session
//!   timeout while a peer replica takes its partitions, then reconnected;
//! - the API link slowed to 2 s, then resetting 20% of the time, then
//!   stalled;
//! - two of three brokers down for 30 s (no write reaches
//!   `min.insync.replicas`): `/readyz` says so, nothing is dead-lettered.
//!
//! The README's test command (`.ci/run`) runs one leader kill and the API
//! link faults; `scripts/chaos.sh quick` the same, `scripts/chaos.sh all`
//! the ignored ones too and the soak (tests/cluster_soak.rs). The tests
//! take the cluster one at a time (`Cluster::ensure`).

mod common;

use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use testkit::cluster::{Cluster, TOXIPROXY_API};
use testkit::toxiproxy;

/// The connector's log on stderr when `RUST_LOG` is set (to read a
/// failure of these long scenarios).
fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        identify_connector::init_logging(identify_connector::config::LogFormat::Text, None);
    }
}

/// The store topic of `topics`' connector.
fn store_topic(topics: &Topics) -> String {
    format!("{}.identify-cache", topics.group)
}

fn committed(topics: &Topics) -> i64 {
    kafka::committed(&topics.group, &topics.input, topics.partitions)
        .iter()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partition_leaders_killed_mid_run_lose_nothing_and_charge_nothing_twice() {
    logs();
    leader_kills(&Cluster::ensure().await, false).await;
}

#[ignore = "scripts/chaos.sh all: the long cluster scenarios"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partition_leaders_killed_mid_transaction_lose_and_duplicate_nothing() {
    logs();
    leader_kills(&Cluster::ensure().await, true).await;
}

async fn leader_kills(cluster: &Cluster, exactly_once: bool) {
    const N: usize = 30_000;
    let scenario = if exactly_once {
        "leader_kill_exactly_once"
    } else {
        "leader_kill"
    };
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let topics = Topics::create(scenario, 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, scenario)).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.brokers = cluster.bootstrap.clone();
    cfg.kafka.exactly_once = exactly_once;
    let connector = Connector::start(cfg).await;
    let store = store_topic(&topics);
    let mut recovered = Vec::new();
    for (i, topic) in [&topics.input, &topics.output, &store].into_iter().enumerate() {
        let before = committed(&topics);
        kafka::wait_for("progress before the kill", Duration::from_secs(120), || {
            assert!(connector.running.live(), "the connector failed; its log is above");
            committed(&topics) > before
        })
        .await;
        let leader = cluster.leader(topic, 0).await;
        println!(
            "{scenario} kill {}: broker {leader}, leader of {topic}/0, committed {}",
            i + 1,
            committed(&topics)
        );
        cluster.kill(leader);
        let killed = Instant::now();
        let at_kill = committed(&topics);
        let what = format!("{scenario}: commits advance after broker {leader} was killed");
        kafka::wait_for(&what, Duration::from_secs(120), || {
            assert!(connector.running.live(), "the connector failed; its log is above");
            committed(&topics) > at_kill || committed(&topics) == N as i64
        })
        .await;
        recovered.push(killed.elapsed().as_secs_f64());
        cluster.start(leader).await;
        cluster.wait_in_sync(topic, 3, Duration::from_secs(120)).await;
    }
    common::wait_done(&topics, Duration::from_secs(300)).await;
    connector.stop().await;
    let stats = sim.stats();
    let audit = common::audit(&topics);
    let worst = recovered.iter().copied().fold(0.0, f64::max);
    println!("{}", audit.result_line(scenario, worst));
    println!(
        "{scenario}: credits_charged={} credits_recharged={} recover_secs={recovered:.1?}",
        stats.credits_charged, stats.credits_recharged
    );
    audit.assert_nothing_lost(scenario);
    audit.assert_all_valid_resolved(N);
    assert_eq!(stats.credits_recharged, 0, "{scenario}: no credit charged twice");
    if exactly_once {
        assert_eq!(audit.duplicates, 0, "{scenario}: read_committed sees each output once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_api_link_slow_resetting_and_stalled_pays_nothing_twice_and_loses_nothing() {
    const N: usize = 30_000;
    const PHASE: Duration = Duration::from_secs(10);
    logs();
    let cluster = Cluster::ensure().await;
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let api = toxiproxy::create(TOXIPROXY_API, &kafka::unique("api"), &sim.addr().to_string()).await;
    let topics = Topics::create("api-link", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "apilink")).await;
    let mut cfg = common::config(&topics, &format!("http://{}", api.listen));
    cfg.kafka.brokers = cluster.bootstrap.clone();
    let connector = Connector::start(cfg).await;
    kafka::wait_for("first commits", Duration::from_secs(60), || committed(&topics) > 0).await;
    let phase = |name: &str| println!("api link: {name} at committed {}", committed(&topics));

    phase("2 s latency");
    api.toxic(
        "slow",
        "latency",
        "downstream",
        1.0,
        serde_json::json!({ "latency": 2000 }),
    )
    .await;
    tokio::time::sleep(PHASE).await;
    api.clear().await;
    // Resets a fifth of the time: every connection open in that moment is
    // reset, most of them mid-answer.
    phase("resets 20% of the time");
    api.resets(PHASE.as_secs() as u32).await;
    // A stalled link: connections stay open, and no byte of any answer
    // (status, listing or result download) comes through.
    phase("stalled");
    api.toxic(
        "stall",
        "timeout",
        "downstream",
        1.0,
        serde_json::json!({ "timeout": 0 }),
    )
    .await;
    tokio::time::sleep(PHASE).await;
    api.clear().await;
    let cleared = Instant::now();
    phase("clear");
    assert!(
        committed(&topics) < N as i64,
        "the faults lasted until the end of the run"
    );
    common::wait_done(&topics, Duration::from_secs(300)).await;
    let recover = cleared.elapsed().as_secs_f64();
    let metrics = connector.metrics();
    let stats = sim.stats();
    connector.stop().await;
    api.delete().await;
    let audit = common::audit(&topics);
    let failed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("identify_api_requests_total{") && l.contains("status=\"error\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("{}", audit.result_line("api_link_faults", recover));
    println!(
        "api link: credits_charged={} credits_recharged={} submits={} requests_without_answer={failed}",
        stats.credits_charged, stats.credits_recharged, stats.submits_accepted
    );
    assert!(failed > 0.0, "the faults cost the connector some answers");
    audit.assert_nothing_lost("api link");
    audit.assert_all_valid_resolved(N);
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
}

#[ignore = "scripts/chaos.sh all: the long cluster scenarios"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_connector_cut_off_past_its_session_is_replaced_and_its_late_writes_change_nothing() {
    logs();
    cut_off(&Cluster::ensure().await, false).await;
}

#[ignore = "scripts/chaos.sh all: the long cluster scenarios"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_transactional_connector_cut_off_past_its_session_is_fenced() {
    logs();
    cut_off(&Cluster::ensure().await, true).await;
}

async fn cut_off(cluster: &Cluster, exactly_once: bool) {
    const N: usize = 20_000;
    let scenario = if exactly_once {
        "cut_off_exactly_once"
    } else {
        "cut_off"
    };
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let topics = Topics::create(scenario, 6).await;
    kafka::produce(&topics.input, 6, &common::emails(N, scenario)).await;
    // The connector under fault reaches the brokers through the proxies
    // only; its peer (same group, same key) directly.
    let mut cut = common::config(&topics, &sim.base_url());
    cut.kafka.brokers = cluster.proxied.clone();
    cut.kafka.exactly_once = exactly_once;
    cut.cache.dir = common::member_dir(&topics, 0);
    let mut peer = cut.clone();
    peer.kafka.brokers = cluster.bootstrap.clone();
    peer.cache.dir = common::member_dir(&topics, 1);
    let a = Connector::start(cut).await;
    let b = Connector::start(peer).await;
    let before = committed(&topics);
    kafka::wait_for("progress before the cut", Duration::from_secs(120), || {
        committed(&topics) > before + 1000
    })
    .await;

    for n in testkit::cluster::BROKERS {
        cluster.proxy(n).set_enabled(false).await;
    }
    let at_cut = committed(&topics);
    println!("{scenario}: cut off at committed {at_cut}");
    // Longer than the session timeout (6 s in the test configuration): the
    // group moves its partitions to the peer.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = committed(&topics);
    println!("{scenario}: committed {during} after 20 s cut off (the peer's)");
    for n in testkit::cluster::BROKERS {
        cluster.proxy(n).set_enabled(true).await;
    }
    let reconnected = Instant::now();
    common::wait_done(&topics, Duration::from_secs(300)).await;
    let recover = reconnected.elapsed().as_secs_f64();
    b.stop().await;
    // The cut-off instance may have stopped itself (its producer fenced);
    // either way it must not have lost or double-charged anything.
    if a.running.live() {
        a.stop().await;
    }
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(scenario, recover));
    println!(
        "{scenario}: credits_charged={} credits_recharged={} committed during the cut {}",
        stats.credits_charged,
        stats.credits_recharged,
        during - at_cut
    );
    assert!(
        during > at_cut,
        "{scenario}: the peer went on while the connector was cut off"
    );
    audit.assert_nothing_lost(scenario);
    audit.assert_all_valid_resolved(N);
    assert_eq!(stats.credits_recharged, 0, "{scenario}: no credit charged twice");
    if exactly_once {
        assert_eq!(audit.duplicates, 0, "{scenario}: the zombie's late writes are fenced");
    }
}

#[ignore = "scripts/chaos.sh all: the long cluster scenarios"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_of_three_brokers_down_halt_visibly_and_resume_without_loss() {
    const N: usize = 20_000;
    const DOWN: Duration = Duration::from_secs(30);
    logs();
    let cluster = Cluster::ensure().await;
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let topics = Topics::create("isr", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "isr")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.brokers = cluster.bootstrap.clone();
    let connector = Connector::start(cfg).await;
    kafka::wait_for("progress", Duration::from_secs(60), || committed(&topics) > 2000).await;
    // The leader of the output's first partition stays; the other two go:
    // no write reaches min.insync.replicas = 2 any more.
    let stays = cluster.leader(&topics.output, 0).await;
    let down: Vec<i32> = testkit::cluster::BROKERS.into_iter().filter(|b| *b != stays).collect();
    let at = committed(&topics);
    for b in &down {
        cluster.kill(*b);
    }
    let killed = Instant::now();
    println!("isr: brokers {down:?} killed at committed {at}; broker {stays} stays");
    let readyz = format!("http://{}/readyz", connector.running.http_addr);
    let mut reason = String::new();
    kafka::wait_for("readyz reports Kafka", Duration::from_secs(25), || {
        reason = common::get_blocking(&readyz);
        reason.contains("kafka:")
    })
    .await;
    println!("isr: readyz after {:.1} s: {reason}", killed.elapsed().as_secs_f64());
    assert_eq!(
        common::metric(&connector.metrics(), "identify_kafka_writes_stalled"),
        1.0
    );
    tokio::time::sleep(DOWN.saturating_sub(killed.elapsed())).await;
    assert!(connector.running.live(), "the connector waits; it does not fail");
    for b in &down {
        cluster.start(*b).await;
    }
    let restarted = Instant::now();
    common::wait_done(&topics, Duration::from_secs(300)).await;
    let recover = restarted.elapsed().as_secs_f64();
    kafka::wait_for("ready again", Duration::from_secs(30), || connector.running.ready()).await;
    assert_eq!(
        common::metric(&connector.metrics(), "identify_kafka_writes_stalled"),
        0.0
    );
    connector.stop().await;
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("two_brokers_down", recover));
    println!(
        "isr: credits_charged={} credits_recharged={}",
        stats.credits_charged, stats.credits_recharged
    );
    audit.assert_nothing_lost("two brokers down");
    audit.assert_all_valid_resolved(N);
    assert!(audit.dlq.is_empty(), "nothing dead-lettered");
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
    // The next scenario starts from a whole cluster.
    cluster.wait_in_sync(&topics.output, 3, Duration::from_secs(120)).await;
}

//! Chaos: the connector binary SIGKILLed at random moments, a consumer
//! group whose members are killed and restarted by a chaos monkey, and an
//! API that fails in every way the simulator can. Each scenario prints one
//! `RESULT` line and asserts that nothing was lost.
//!
//! The scenarios run one at a time (they share two cores with the broker).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ConnectorProc;
use common::{kafka, Connector, Topics};
use rand::{Rng, SeedableRng};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The group protocol a scenario runs with.
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    /// The classic protocol, with a 3 s session so that the group notices a
    /// SIGKILLed member quickly.
    Classic,
    /// Kafka 4's consumer protocol (KIP-848): the broker owns sessions and
    /// heartbeats (the local broker's are as short), the client sets none.
    Consumer,
}

/// At least once (duplicates allowed, none lost) or exactly once
/// (`kafka.exactly_once`: a read_committed consumer sees no duplicate).
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// The test configuration for `protocol` and `delivery`.
fn chaos_toml(topics: &Topics, base_url: &str, protocol: Protocol, delivery: Delivery) -> String {
    let mut toml = common::toml_for(topics, base_url);
    if delivery == Delivery::ExactlyOnce {
        toml = toml.replace(
            "rebalance_drain_timeout",
            "exactly_once = true\nrebalance_drain_timeout",
        );
    }
    match protocol {
        Protocol::Classic => toml.replace(r#""session.timeout.ms" = "6000""#, r#""session.timeout.ms" = "3000""#),
        Protocol::Consumer => toml
            .replace(r#""session.timeout.ms" = "6000""#, r#""group.protocol" = "consumer""#)
            .replace(r#""heartbeat.interval.ms" = "500""#, ""),
    }
}

fn committed_sum(topics: &Topics) -> i64 {
    kafka::committed(&topics.group, &topics.input, topics.partitions)
        .iter()
        .map(|c| (*c).max(0))
        .sum()
}

/// Seconds from `since` until the group commits beyond `before` (0 when
/// everything was already committed).
async fn wait_commit_progress(topics: &Topics, before: i64, since: Instant) -> f64 {
    let total: i64 = kafka::end_offsets(&topics.input, topics.partitions).iter().sum();
    if before >= total {
        return 0.0;
    }
    kafka::wait_for("commits to advance", Duration::from_secs(90), || {
        committed_sum(topics) > before
    })
    .await;
    since.elapsed().as_secs_f64()
}

fn write_config(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("connector.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_three_times_at_random_moments_loses_nothing() {
    crash(Protocol::Classic, Delivery::AtLeastOnce, "crash_sigkill_x3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_three_times_with_the_consumer_group_protocol_loses_nothing() {
    crash(
        Protocol::Consumer,
        Delivery::AtLeastOnce,
        "crash_sigkill_x3_consumer_protocol",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_three_times_exactly_once_no_duplicate_no_loss() {
    crash(
        Protocol::Classic,
        Delivery::ExactlyOnce,
        "crash_sigkill_x3_exactly_once",
    )
    .await;
}

async fn crash(protocol: Protocol, delivery: Delivery, scenario: &str) {
    let _serial = SERIAL.lock().await;
    const N: usize = 20_000;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("crash", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "crash")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut toml = chaos_toml(&topics, &sim.base_url(), protocol, delivery);
    if delivery == Delivery::ExactlyOnce {
        // As the docs ask for exactly once: a stable name per replica (a
        // StatefulSet pod's), so that the restarted pod's transactional id
        // fences the open transaction of the one killed. Without it that
        // transaction holds the group's offsets until the broker aborts it
        // (transaction.timeout.ms, 60 s).
        toml = toml.replace("[kafka]\n", "[kafka]\ninstance_id = \"crash-0\"\n");
        assert!(toml.contains("instance_id"), "the test's config has a [kafka] table");
    }
    let cfg = write_config(dir.path(), &toml);
    let log = dir.path().join("connector.log");

    let seed: u64 = rand::rng().random();
    println!("{scenario}: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut outputs_after_kill = Vec::new();
    let mut committed_at_kill = 0;
    for round in 1..=3 {
        let mut proc = common::connector_proc(&cfg, &log, "warn", &[]);
        // Mid-work, not at start-up: once this run has committed something
        // (outputs and offsets, in a transaction with exactly_once), at a
        // random moment of the next two seconds.
        let before = committed_sum(&topics);
        kafka::wait_for("commits to advance before the kill", Duration::from_secs(60), || {
            committed_sum(&topics) > before
        })
        .await;
        let after = Duration::from_millis(rng.random_range(0..=2000));
        tokio::time::sleep(after).await;
        assert!(
            proc.try_wait().is_none(),
            "round {round}: the connector exited on its own:\n{}",
            proc.stderr()
        );
        proc.kill();
        committed_at_kill = committed_sum(&topics);
        let outputs = kafka::end_offsets(&topics.output, 3).iter().sum::<i64>()
            + kafka::end_offsets(&topics.dlq, 1).iter().sum::<i64>();
        println!("crash: SIGKILL {round} {after:?} after a commit: outputs={outputs} committed={committed_at_kill}");
        outputs_after_kill.push(outputs);
    }
    assert!(
        outputs_after_kill[0] < N as i64,
        "the first SIGKILL came before the work was done"
    );

    let restarted = Instant::now();
    let proc = common::connector_proc(&cfg, &log, "warn", &[]);
    let recover = wait_commit_progress(&topics, committed_at_kill, restarted).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let status = proc.terminate(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let audit = common::audit(&topics);
    println!("{}", audit.result_line(scenario, recover));
    audit.assert_nothing_lost("crash");
    audit.assert_all_valid_resolved(N);
    let stats = sim.stats();
    println!(
        "{scenario}: jobs={} credits_charged={} credits_recharged={}",
        stats.submits_accepted, stats.credits_charged, stats.credits_recharged
    );
    assert_eq!(
        stats.credits_recharged, 0,
        "jobs in flight at a kill are finished from the journal, not paid again (seed {seed})"
    );
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(
            audit.duplicates, 0,
            "read_committed sees each output once (seed {seed})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_chaos_monkey_kills_and_restarts_members_loses_nothing() {
    churn(Protocol::Classic, Delivery::AtLeastOnce, "group_churn_3_members").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_with_the_consumer_group_protocol_loses_nothing() {
    churn(
        Protocol::Consumer,
        Delivery::AtLeastOnce,
        "group_churn_3_members_consumer_protocol",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_exactly_once_no_duplicate_no_loss() {
    churn(
        Protocol::Classic,
        Delivery::ExactlyOnce,
        "group_churn_3_members_exactly_once",
    )
    .await;
}

async fn churn(protocol: Protocol, delivery: Delivery, scenario: &str) {
    let _serial = SERIAL.lock().await;
    const N: usize = 20_000;
    const MEMBERS: usize = 3;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("churn", 6).await;
    kafka::produce(&topics.input, 6, &common::emails(N, "churn")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &chaos_toml(&topics, &sim.base_url(), protocol, delivery));
    let logs: Vec<_> = (0..MEMBERS)
        .map(|i| dir.path().join(format!("member-{i}.log")))
        .collect();
    let dirs: Vec<String> = (0..MEMBERS).map(|i| common::member_dir(&topics, i)).collect();
    let start = |i: usize| common::connector_proc(&cfg, &logs[i], "warn", &[("IDENTIFY_CACHE__DIR", &dirs[i])]);
    let mut members: Vec<Option<ConnectorProc>> = (0..MEMBERS).map(|i| Some(start(i))).collect();

    // The monkey: every 1.5-3 s one member is SIGKILLed and started again,
    // until the work is done or it has struck 6 times.
    let ends = kafka::end_offsets(&topics.input, 6);
    let seed: u64 = rand::rng().random();
    println!("{scenario}: seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut last_restart = Instant::now();
    let mut committed_at_kill = 0;
    while kills < 6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..=3000))).await;
        if kafka::committed(&topics.group, &topics.input, 6) == ends {
            break;
        }
        let victim = rng.random_range(0..MEMBERS);
        let mut proc = members[victim].take().unwrap();
        assert!(
            proc.try_wait().is_none(),
            "member {victim} exited on its own:\n{}",
            proc.stderr()
        );
        proc.kill();
        kills += 1;
        committed_at_kill = committed_sum(&topics);
        println!("churn: SIGKILL {kills} of member {victim}, committed={committed_at_kill}");
        members[victim] = Some(start(victim));
        last_restart = Instant::now();
    }
    assert!(
        kills >= 3,
        "the monkey struck at least 3 times during the run (struck {kills})"
    );
    let recover = wait_commit_progress(&topics, committed_at_kill, last_restart).await;
    common::wait_done(&topics, Duration::from_secs(150)).await;
    for (i, m) in members.into_iter().enumerate() {
        let status = m.unwrap().terminate(Duration::from_secs(60));
        assert!(status.success(), "member {i} exits 0 on SIGTERM: {status:?}");
    }

    let audit = common::audit(&topics);
    println!("{}", audit.result_line(scenario, recover));
    audit.assert_nothing_lost("group churn");
    audit.assert_all_valid_resolved(N);
    if delivery == Delivery::ExactlyOnce {
        assert_eq!(
            audit.duplicates, 0,
            "read_committed sees each output once (seed {seed})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_everywhere_every_record_resolved_or_dead_lettered_with_reason() {
    let _serial = SERIAL.lock().await;
    const N: usize = 3_000;
    let sim = common::start_sim(|c| {
        c.error_rate_submit = 0.15;
        c.error_rate_poll = 0.15;
        c.error_rate_download = 0.15;
        c.error_rate_list = 0.15;
        c.job_failure_rate = 0.10;
        c.corrupt_rate = 0.10;
        c.truncate_rate = 0.10;
        c.missing_line_rate = 0.05;
        c.expired_link_rate = 0.10;
        c.slow_download = Duration::from_millis(400);
    })
    .await;
    let topics = Topics::create("apifaults", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "faults")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    // Smaller jobs: more of them, so more faults per run.
    cfg.batch.max_size = 100;
    // Bounded retries: a request at most 6 times, a job at most twice.
    cfg.api.max_request_retries = 6;
    cfg.api.max_job_attempts = 2;
    cfg.api.max_backoff = Duration::from_secs(1);
    let started = Instant::now();
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(180)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = connector.metrics();
    connector.stop().await;
    let stats = sim.stats();

    let audit = common::audit(&topics);
    let reasons = audit.dlq_reasons();
    println!("{}", audit.result_line("api_faults", elapsed));
    println!(
        "api_faults: dead_lettered_by_reason={reasons:?} injected_500s={} jobs_failed={} downloads_damaged={} download_errors={} resubmits={} retries={}",
        stats.injected_500s,
        stats.jobs_failed,
        stats.downloads_damaged,
        stats.download_errors,
        common::metric(&metrics, "identify_jobs_resubmitted_total"),
        common::metric(&metrics, "identify_api_retries_total"),
    );
    audit.assert_nothing_lost("api faults");
    assert_eq!(audit.inputs, N);
    // One record out per record in: resolved or dead-lettered, never both.
    assert_eq!(audit.duplicates, 0, "no restarts, so no duplicates");
    assert_eq!(audit.outputs.len() + audit.dlq.len(), N);
    for r in &audit.dlq {
        let reason = r.header("identify.error.reason");
        assert!(
            ["job_failed", "missing_result"].contains(&reason),
            "unexpected reason {reason}"
        );
        assert!(!r.header("identify.error.message").is_empty(), "a message says why");
    }
    // The faults did happen.
    assert!(stats.injected_500s > 0, "500s injected");
    assert!(stats.jobs_failed > 0, "jobs failed");
    assert!(stats.downloads_damaged > 0, "result files damaged");
    assert!(
        common::metric(&metrics, "identify_jobs_resubmitted_total") > 0.0,
        "failed jobs were resubmitted"
    );
}

/// Regression: a rebalance while the in-flight budget has every partition
/// paused. librdkafka keeps an application pause across revoke and
/// re-assignment; the consumer loop used to "resume" the empty assignment
/// between the two and then never resume the partitions it got back, so
/// the connector stalled for good (first seen when the broker restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_while_paused_resumes_the_partitions_assigned_back() {
    let _serial = SERIAL.lock().await;
    const N: usize = 1500;
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_secs(2);
        c.jitter = Duration::ZERO;
    })
    .await;
    let topics = Topics::create("pausedrebalance", 2).await;
    let other = kafka::unique("pausedrebalance-other");
    kafka::create_topics(&[(&other, 1)]).await;
    kafka::produce(&topics.input, 2, &common::emails(N, "paused")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.max_in_flight = 300;
    let connector = Connector::start(cfg).await;
    kafka::wait_for("partitions paused by the budget", Duration::from_secs(30), || {
        common::metric(&connector.metrics(), "identify_paused_partitions") > 0.0
    })
    .await;

    // Another member joins the group (subscribed to another topic): an eager
    // rebalance revokes both partitions and assigns them straight back.
    let assigns = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with(r#"identify_rebalances_total{kind="assign"}"#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = assigns(&connector.metrics());
    let intruder: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka::bootstrap())
        .set("group.id", &topics.group)
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&intruder, &[other.as_str()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigns(&connector.metrics()) <= before {
        assert!(Instant::now() < deadline, "the connector was never re-assigned");
        let _ = intruder.poll(Duration::from_millis(100));
    }
    sim.update(|c| c.base_time = Duration::from_millis(200));
    let rejoined = Instant::now();
    common::wait_done(&topics, Duration::from_secs(60)).await;
    let recover = rejoined.elapsed().as_secs_f64();
    drop(intruder);
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("rebalance_while_paused", recover));
    audit.assert_nothing_lost("rebalance while paused");
}

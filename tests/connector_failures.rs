//! The connector under the failures its promise must survive: jobs that
//! finish out of order, a SIGKILL, a second instance joining and leaving,
//! a refused API key, a slow API with a backlog beyond the budget, and a
//! SIGTERM while it starts.

mod common;

use std::time::{Duration, Instant};

use common::ConnectorProc;
use common::{kafka, Connector, Topics};

fn emails(n: usize, tag: &str) -> kafka::Records {
    (0..n)
        .map(|i| (None, common::event(&format!("{tag}{i}@example{}.com", i % 13))))
        .collect()
}

/// Every input offset below the committed offset already has its output.
fn check_commit_invariant(topics: &Topics) -> i64 {
    let committed = kafka::committed(&topics.group, &topics.input, topics.partitions);
    let audit = common::audit(topics);
    for (p, c) in committed.iter().enumerate() {
        if let Some((_, o)) = audit.lost.iter().find(|(lp, lo)| *lp == p as i32 && lo < c) {
            panic!("partition {p} committed {c} but offset {o} has no output");
        }
    }
    committed.iter().filter(|c| **c > 0).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_completion_never_commits_past_an_unfinished_batch() {
    // Heavily skewed job latencies: later jobs often finish first.
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_millis(50);
        c.jitter = Duration::from_secs(3);
    })
    .await;
    let topics = Topics::create("order", 2).await;
    kafka::produce(&topics.input, 2, &emails(3000, "order")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.batch.max_size = 100;
    let connector = Connector::start(cfg).await;
    let started = Instant::now();
    let mut samples = 0;
    let ends = kafka::end_offsets(&topics.input, 2);
    loop {
        let committed_total = tokio::task::block_in_place(|| check_commit_invariant(&topics));
        samples += 1;
        if kafka::committed(&topics.group, &topics.input, 2) == ends {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not done; committed {committed_total}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{} samples={samples}", audit.summary("out-of-order"));
    assert!(audit.lost.is_empty());
    assert!(samples >= 3, "the invariant was sampled while jobs ran");
}

/// The connector binary on `cfg`, its stderr in the test's temporary folder.
fn connector_process(cfg: &std::path::Path) -> ConnectorProc {
    common::connector_proc(cfg, &cfg.with_extension("log"), "warn", &[])
}

/// A pod stopped while it starts (a rollout that changes its mind, a node
/// drained) exits 0 at once, also while its store restores, never killed by
/// the signal's default action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_exits_cleanly() {
    const N: usize = 6000;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("termstart", 3).await;
    kafka::produce(&topics.input, 3, &emails(N, "termstart")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connector.toml");
    std::fs::write(&path, common::toml_for(&topics, &sim.base_url())).unwrap();
    let log = dir.path().join("connector.log");
    // A store with something to restore.
    let child = common::connector_proc(&path, &log, "info", &[]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    assert!(child.terminate(Duration::from_secs(60)).success());
    let mut during_restore = 0;
    for round in 0..3 {
        std::fs::remove_file(&log).unwrap();
        let child = common::connector_proc(&path, &log, "info", &[]);
        // The HTTP server listens before the store restores.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("HTTP server listening")) {
            assert!(Instant::now() < deadline, "the HTTP server never listened");
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = child.terminate(Duration::from_secs(30));
        let restored = std::fs::read_to_string(&log).unwrap().contains("result store ready");
        during_restore += usize::from(!restored);
        println!(
            "round {round}: SIGTERM {} the store was restored: {status:?}",
            if restored { "after" } else { "before" }
        );
        assert!(
            status.success(),
            "round {round}: SIGTERM at start-up exits 0: {status:?}"
        );
    }
    assert!(
        during_restore > 0,
        "no SIGTERM came during the restore: the test missed its moment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_loses_nothing() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("kill", 3).await;
    kafka::produce(&topics.input, 3, &emails(4000, "kill")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connector.toml");
    std::fs::write(&path, common::toml_for(&topics, &sim.base_url())).unwrap();

    let child = connector_process(&path);
    // Kill it once part of the work is published and committed.
    kafka::wait_for("some progress", Duration::from_secs(60), || {
        kafka::committed(&topics.group, &topics.input, 3).iter().any(|c| *c > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill();
    let before = common::audit(&topics);
    assert!(before.outputs.len() < 4000, "killed before the end");

    let child = connector_process(&path);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let status = child.terminate(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let audit = common::audit(&topics);
    println!(
        "{} killed_after_outputs={}",
        audit.summary("sigkill"),
        before.outputs.len()
    );
    assert!(
        audit.lost.is_empty(),
        "lost {:?}",
        &audit.lost[..audit.lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_joins_then_leaves_nothing_lost() {
    let sim = common::start_sim(|c| c.base_time = Duration::from_millis(800)).await;
    let topics = Topics::create("join", 6).await;
    kafka::produce(&topics.input, 6, &emails(6000, "join")).await;
    let a = Connector::start(common::config(&topics, &sim.base_url())).await;
    kafka::wait_for("first outputs", Duration::from_secs(60), || {
        kafka::end_offsets(&topics.output, 3).iter().sum::<i64>() > 0
    })
    .await;
    let mut second = common::config(&topics, &sim.base_url());
    second.cache.dir = common::member_dir(&topics, 1);
    let b = Connector::start(second).await;
    kafka::wait_for("second instance assigned", Duration::from_secs(30), || {
        common::metric(&b.metrics(), "identify_rebalances_total") > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.stop().await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let metrics_a = a.metrics();
    a.stop().await;
    let audit = common::audit(&topics);
    println!(
        "{} rebalances_a={}",
        audit.summary("join-leave"),
        common::metric(&metrics_a, "identify_rebalances_total")
    );
    assert!(
        audit.lost.is_empty(),
        "lost {:?}",
        &audit.lost[..audit.lost.len().min(10)]
    );
    assert!(
        common::metric(&metrics_a, "identify_rebalances_total") >= 3.0,
        "A saw the join and the leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_then_corrected_nothing_lost_nothing_committed_early() {
    let sim = common::start_sim(|c| c.api_keys = vec!["some-other-key".into()]).await;
    let topics = Topics::create("authz", 2).await;
    kafka::produce(&topics.input, 2, &emails(700, "authz")).await;
    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    let http = connector.running.http_addr;
    let ready = || async move {
        reqwest::get(format!("http://{http}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    kafka::wait_for("401s", Duration::from_secs(30), || sim.stats().unauthorized_401 >= 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ready().await, 503, "unready while the API refuses the key");
    assert_eq!(
        kafka::committed(&topics.group, &topics.input, 2),
        vec![-1, -1],
        "nothing committed"
    );
    assert_eq!(
        kafka::end_offsets(&topics.output, 3).iter().sum::<i64>(),
        0,
        "nothing published"
    );
    assert_eq!(kafka::end_offsets(&topics.dlq, 1), vec![0], "nothing dead-lettered");

    sim.update(|c| c.api_keys = vec![common::KEY.into()]);
    common::wait_done(&topics, Duration::from_secs(60)).await;
    assert_eq!(ready().await, 200, "ready once the key works");
    connector.stop().await;
    let audit = common::audit(&topics);
    println!("{}", audit.summary("bad-key"));
    assert!(audit.lost.is_empty());
    assert_eq!(audit.outputs.len(), 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_api_backlog_beyond_budget_stays_in_group_with_bounded_memory() {
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_secs(2);
        c.jitter = Duration::ZERO;
    })
    .await;
    let topics = Topics::create("slow", 3).await;
    kafka::produce(&topics.input, 3, &emails(3000, "slow")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.max_in_flight = 400;
    cfg.kafka.consumer.insert("max.poll.interval.ms".into(), "7000".into());
    let connector = Connector::start(cfg).await;
    let started = Instant::now();
    let (mut peak, mut paused_seen) = (0.0f64, false);
    let ends = kafka::end_offsets(&topics.input, 3);
    while kafka::committed(&topics.group, &topics.input, 3) != ends {
        assert!(started.elapsed() < Duration::from_secs(150), "backlog not drained");
        let m = connector.metrics();
        peak = peak.max(common::metric(&m, "identify_in_flight_records"));
        paused_seen |= common::metric(&m, "identify_paused_partitions") > 0.0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = connector.metrics();
    connector.stop().await;
    let audit = common::audit(&topics);
    let rebalances = common::metric(&m, "identify_rebalances_total");
    println!(
        "{} peak_in_flight={peak} run_secs={}",
        audit.summary("slow-api"),
        started.elapsed().as_secs()
    );
    assert!(audit.lost.is_empty());
    assert!(
        started.elapsed() > Duration::from_secs(8),
        "ran longer than max.poll.interval.ms"
    );
    assert!(paused_seen, "back-pressure paused partitions");
    assert!(peak <= 401.0, "in-flight records bounded by the budget: {peak}");
    assert_eq!(rebalances, 1.0, "one assignment, never evicted from the group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_jobs_in_flight_does_not_pay_twice() {
    // Slow jobs, so that several are in flight when the process dies.
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_secs(3);
        c.jitter = Duration::ZERO;
    })
    .await;
    let topics = Topics::create("recover", 3).await;
    kafka::produce(&topics.input, 3, &emails(1500, "recover")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connector.toml");
    std::fs::write(&path, common::toml_for(&topics, &sim.base_url())).unwrap();

    let child = connector_process(&path);
    kafka::wait_for("jobs in flight", Duration::from_secs(60), || {
        sim.stats().submits_accepted >= 3
    })
    .await;
    // Let the jobs get under way, then kill: the restart (a new member)
    // claims them from the journal once their owner has been silent.
    tokio::time::sleep(Duration::from_millis(800)).await;
    child.kill();
    let killed_with = sim.stats().submits_accepted;

    let child = connector_process(&path);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    assert!(child.terminate(Duration::from_secs(60)).success(), "SIGTERM exits 0");
    let audit = common::audit(&topics);
    let stats = sim.stats();
    println!(
        "{} jobs_before_kill={killed_with} jobs_total={} credits_charged={} credits_recharged={} identifiers_resubmitted={}",
        audit.summary("sigkill-recovery"),
        stats.submits_accepted,
        stats.credits_charged,
        stats.credits_recharged,
        stats.identifiers_submitted_more_than_once
    );
    assert!(
        audit.lost.is_empty(),
        "lost {:?}",
        &audit.lost[..audit.lost.len().min(10)]
    );
    assert_eq!(
        stats.identifiers_submitted_more_than_once, 0,
        "jobs in flight at the crash were reused, not resubmitted"
    );
    assert_eq!(stats.credits_recharged, 0);
}

/// A job's download gets `api.job_timeout` of its own: the time its submit
/// spent waiting for a slot does not shorten it. The key is full for 5 s
/// (every submit answered 429), then the job runs, then its result file
/// answers 500 for 4.5 s (longer than one round of request retries), with
/// an 8 s `api.job_timeout`: the download is retried until it succeeds (it
/// used to be given up at submit + 8 s, and the records dead-lettered as
/// `job_failed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_gets_its_own_job_timeout_whatever_the_submit_waited() {
    let sim = common::start_sim(|c| {
        c.max_active_jobs = 0;
        c.base_time = Duration::from_millis(300);
        c.jitter = Duration::ZERO;
    })
    .await;
    let topics = Topics::create("download-deadline", 1).await;
    kafka::produce(&topics.input, 1, &emails(50, "deadline")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.api.job_timeout = Duration::from_secs(8);
    cfg.api.max_backoff = Duration::from_millis(500);
    let connector = Connector::start(cfg).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim.update(|c| {
        c.max_active_jobs = 5;
        c.error_rate_download = 1.0;
    });
    kafka::wait_for("the job completed", Duration::from_secs(30), || {
        sim.stats().jobs_completed >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    sim.update(|c| c.error_rate_download = 0.0);
    common::wait_done(&topics, Duration::from_secs(60)).await;
    connector.stop().await;
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!(
        "{} submits_refused_429={} download_errors={}",
        audit.summary("download-deadline"),
        stats.submits_rejected_429,
        stats.download_errors
    );
    assert!(
        stats.submits_rejected_429 > 0 && stats.download_errors > 0,
        "both waits happened"
    );
    audit.assert_nothing_lost("download deadline");
    audit.assert_all_valid_resolved(50);
}

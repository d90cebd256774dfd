//! A submit's answer lost after the API created the job (a 504, a cut
//! connection, an answer slower than `api.request_timeout`), and a key
//! shared with another tool's jobs: the job of a lost answer is found by
//! its content and used, never another one, and nothing is paid twice.
//! The simulator's ledger is the judge: `identifiers_submitted_more_than_once`
//! stays 0 (no lost submit was sent again), `credits_recharged` stays 0.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{kafka, ConnectorProc, Topics};
use crustdata_sim::SimConfig;
use testkit::metrics::{metric_with, scrape};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 5 % of submits each: answered 504, cut, answered after 3 s (the
/// connector gives up after 2 s); jobs of 1 s varying by 30 %.
fn lost_answers(c: &mut SimConfig) {
    c.lost_response_rate = 0.05;
    c.cut_response_rate = 0.05;
    c.slow_response_rate = 0.05;
    c.slow_response = Duration::from_secs(3);
    c.base_time = Duration::from_millis(850);
    c.jitter = Duration::from_millis(300);
    c.retrieval_time = Duration::ZERO;
    c.per_identifier_time = Duration::ZERO;
}

fn write_config(dir: &Path, topics: &Topics, base_url: &str) -> PathBuf {
    let toml = common::toml_for(topics, base_url)
        .replace(r#""session.timeout.ms" = "6000""#, r#""session.timeout.ms" = "3000""#)
        .replace("[api]\n", "[api]\nrequest_timeout = \"2s\"\nclock_skew = \"1s\"\n");
    let path = dir.join("connector.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn member(cfg: &Path, dir: &Path, topics: &Topics, i: usize, listen: &str) -> ConnectorProc {
    let cache = common::member_dir(topics, i);
    let instance = format!("lost-{i}");
    common::connector_proc(
        cfg,
        &dir.join(format!("member-{i}.log")),
        "warn",
        &[
            ("IDENTIFY_CACHE__DIR", &cache),
            ("IDENTIFY_SERVER__LISTEN", listen),
            ("IDENTIFY_KAFKA__INSTANCE_ID", &instance),
        ],
    )
}

/// Waits until every member at `addrs` owns partitions, `total` in all.
async fn members_settled(addrs: &[String], total: f64) {
    let settled = async {
        loop {
            let mut each = Vec::new();
            for a in addrs {
                each.push(scrape(a, "identify_assigned_partitions").await);
            }
            if each.iter().all(|n| *n >= 1.0) && each.iter().sum::<f64>() == total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), settled)
        .await
        .expect("every member owns partitions");
}

async fn metrics_of(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `members` connectors drain `n` emails (and, with `lone`, one more
/// email a moment later, flushed alone by its linger) under lost answers.
async fn drain_with_lost_answers(scenario: &str, members: usize, n: usize, lone: bool) {
    let _serial = SERIAL.lock().await;
    let sim = common::start_sim(lost_answers).await;
    let partitions = 6;
    let topics = Topics::create(scenario, partitions).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let addrs: Vec<String> = (0..members)
        .map(|_| format!("127.0.0.1:{}", testkit::free_port()))
        .collect();
    let procs: Vec<ConnectorProc> = (0..members)
        .map(|i| member(&cfg, dir.path(), &topics, i, &addrs[i]))
        .collect();
    members_settled(&addrs, f64::from(partitions)).await;
    let started = Instant::now();
    kafka::produce(&topics.input, partitions, &common::emails(n, scenario)).await;
    let mut inputs = n;
    if lone {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kafka::produce(
            &topics.input,
            partitions,
            &common::emails(1, &format!("{scenario}-lone")),
        )
        .await;
        inputs += 1;
    }
    common::wait_done(&topics, Duration::from_secs(240)).await;
    let drained = started.elapsed().as_secs_f64();
    let mut ours = 0.0;
    let mut not_created = 0.0;
    for a in &addrs {
        let text = metrics_of(a).await;
        ours += metric_with(&text, "identify_lost_submits_total", r#"verdict="ours""#).unwrap_or(0.0);
        not_created += metric_with(&text, "identify_lost_submits_total", r#"verdict="not_created""#).unwrap_or(0.0);
    }
    for p in procs {
        assert!(p.terminate(Duration::from_secs(60)).success());
    }
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(scenario, drained));
    println!(
        "{scenario}: members={members} jobs={} lost_answers={} (504 {}, cut {}, slow {}) found_by_content={ours} not_created={not_created} credits_charged={} credits_recharged={} identifiers_submitted_twice={}",
        stats.submits_accepted,
        stats.submit_answers_lost,
        stats.submit_answers_lost - stats.submit_answers_cut - stats.submit_answers_slow,
        stats.submit_answers_cut,
        stats.submit_answers_slow,
        stats.credits_charged,
        stats.credits_recharged,
        stats.identifiers_submitted_more_than_once,
    );
    audit.assert_nothing_lost(scenario);
    audit.assert_all_valid_resolved(inputs);
    assert!(stats.submit_answers_lost >= 3, "answers were lost");
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
    assert_eq!(
        stats.identifiers_submitted_more_than_once, 0,
        "the API created every lost submit's job: none was submitted again"
    );
    assert_eq!(
        ours as u64, stats.submit_answers_lost,
        "every lost answer's own job found, once"
    );
    assert_eq!(audit.duplicates, 0, "each record published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_resolved_by_content_and_nothing_is_paid_twice() {
    drain_with_lost_answers("lost-one-pod", 1, 18_000, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_with_two_replicas_pay_nothing_twice_and_publish_once() {
    drain_with_lost_answers("lost-two-pods", 2, 18_000, false).await;
}

/// Another tool keeps two jobs of five minutes on the same key (one of
/// the connector's batch size), some jobs are listed without `created_at`,
/// and the connector is killed and restarted midway: it adopts neither
/// foreign job, and its records flow on the three free slots with few
/// 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tools_jobs_on_the_key_are_never_adopted_and_do_not_stall_the_pipeline() {
    let _serial = SERIAL.lock().await;
    const N: usize = 3_000;
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_millis(500);
        c.jitter = Duration::from_millis(100);
        c.retrieval_time = Duration::ZERO;
        c.variants.undated_rate = 0.5;
    })
    .await;
    let ids = |tag: &str, n: usize| (0..n).map(|i| format!("{tag}-{i}@tool.example")).collect::<Vec<_>>();
    let foreign = [
        sim.foreign_job(common::KEY, ids("other", 300), Duration::from_secs(300)),
        sim.foreign_job(common::KEY, ids("else", 40), Duration::from_secs(300)),
    ];
    let topics = Topics::create("shared-with-a-tool", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    kafka::produce(&topics.input, 3, &common::emails(N, "tool")).await;
    let started = Instant::now();
    let first = member(&cfg, dir.path(), &topics, 0, &addr);
    kafka::wait_for("some jobs", Duration::from_secs(60), || {
        sim.stats().submits_accepted >= 2
    })
    .await;
    first.kill();
    let proc = member(&cfg, dir.path(), &topics, 0, &addr);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let drained = started.elapsed().as_secs_f64();
    let foreign_still_running = sim.stats().active_jobs >= 2;
    let text = metrics_of(&addr).await;
    assert!(proc.terminate(Duration::from_secs(60)).success());
    let stats = sim.stats();
    let audit = common::audit(&topics);
    let per_job = stats.rate_limited_active_jobs as f64 / stats.submits_accepted.max(1) as f64;
    println!("{}", audit.result_line("shared_with_another_tool", drained));
    println!(
        "shared_with_another_tool: jobs={} foreign_jobs={} 429s={} ({per_job:.3} per job) drained_in={drained:.1}s",
        stats.submits_accepted, stats.foreign_jobs, stats.rate_limited_active_jobs
    );
    audit.assert_nothing_lost("shared key");
    audit.assert_all_valid_resolved(N);
    for o in &audit.outputs {
        let batch = o.header("identify.batch_id");
        assert!(!foreign.iter().any(|f| f == batch), "a foreign job's result was used");
    }
    // A submit of the killed pod whose answer the kill cut off is found by
    // its content after the restart (verdict "ours"): legitimately, at most
    // once per slot it held. The foreign jobs can never be (checked above:
    // no output carries their batch ids).
    let ours = metric_with(&text, "identify_lost_submits_total", r#"verdict="ours""#).unwrap_or(0.0);
    assert!(ours <= 5.0, "{ours} lost submits found by content");
    assert!(per_job <= 0.1, "{per_job} 429s per job");
    assert!(
        foreign_still_running,
        "the pipeline drained while the foreign jobs still ran: it never waited for them"
    );
    assert_eq!(stats.credits_recharged, 0);
}

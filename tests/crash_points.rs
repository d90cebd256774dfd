//! Pay once, at the worst moment: the connector is aborted at each named
//! step of a job's life (a failpoint compiled in with `--features
//! failpoints`, the process dying there as a SIGKILL would stop it), then
//! restarted. At every step: 0 credits charged twice (the simulator's
//! ledger), every record resolved with its real result, 0 dead letters.
//! Which occurrence of the step is struck comes from a seed, printed;
//! `CRASH_SEED=N` replays it. One more scenario kills a pod whose jobs are
//! in flight and lets its peer claim them.
#![cfg(feature = "failpoints")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{kafka, ConnectorProc, Topics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const N: usize = 1_500;

fn seeded(scenario: &str) -> StdRng {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{scenario}: seed {seed} (CRASH_SEED={seed} replays it)");
    StdRng::seed_from_u64(seed)
}

/// The test configuration: a 3 s session, and a 3 s request timeout with
/// 1 s of clock skew, so that a submit written ahead but never sent is
/// called never created within seconds.
fn write_config(dir: &Path, topics: &Topics, base_url: &str) -> PathBuf {
    let toml = common::toml_for(topics, base_url)
        .replace(r#""session.timeout.ms" = "6000""#, r#""session.timeout.ms" = "3000""#)
        .replace("[api]\n", "[api]\nrequest_timeout = \"3s\"\nclock_skew = \"1s\"\n");
    let path = dir.join("connector.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `FAILPOINTS` striking `point` at its `skip`+1st occurrence.
fn failpoints(point: &str, skip: u32) -> String {
    if skip == 0 {
        format!("{point}=return")
    } else {
        format!("{point}={skip}*off->return")
    }
}

/// Waits for `proc` to die at its failpoint; returns what it printed.
async fn died(mut proc: ConnectorProc, point: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    while proc.try_wait().is_none() {
        assert!(Instant::now() < deadline, "{point}: never reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = proc.stderr();
    assert!(
        log.contains(&format!("failpoint {point} reached")),
        "{point}: the process ended otherwise:\n{log}"
    );
    log
}

/// Strikes at `point` (a failpoint, or `None`: a SIGKILL while a submit's
/// answer is on the wire), restarts, and checks the ledger and the output.
async fn crash_at(scenario: &str, point: Option<&str>) {
    let _serial = SERIAL.lock().await;
    let mut rng = seeded(scenario);
    let skip = rng.random_range(0..=2u32);
    let sim = common::start_sim(|c| {
        if point.is_none() {
            // Every answer spends 150-250 ms on the wire after the request
            // was handled: a submit's job exists before its id arrives.
            c.request_latency_min = Duration::from_millis(150);
            c.request_latency_max = Duration::from_millis(250);
        }
    })
    .await;
    let topics = Topics::create(&format!("crash-{scenario}"), 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, scenario)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let log = dir.path().join("connector.log");
    let instance = format!("crash-{scenario}");
    let base_env = [("IDENTIFY_KAFKA__INSTANCE_ID", instance.as_str())];
    match point {
        Some(p) => {
            let fp = failpoints(p, skip);
            let mut env = base_env.to_vec();
            env.push(("FAILPOINTS", fp.as_str()));
            died(common::connector_proc(&cfg, &log, "warn", &env), p).await;
            println!("{scenario}: aborted at {p} (occurrence {})", skip + 1);
        }
        None => {
            let proc = common::connector_proc(&cfg, &log, "warn", &base_env);
            // The moment the API created submit skip+1's job: its answer
            // is then on the wire for 150-250 ms (the pod may send its
            // five submits within a few hundred milliseconds, so the test
            // watches closely rather than every 100 ms).
            let want = u64::from(skip) + 1;
            let deadline = Instant::now() + Duration::from_secs(60);
            while sim.stats().submits_accepted < want {
                assert!(Instant::now() < deadline, "{scenario}: no submit {want} accepted");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            proc.kill();
            println!(
                "{scenario}: SIGKILL with a submit's answer on the wire (submit {})",
                skip + 1
            );
        }
    }
    let before = sim.stats();
    let started = Instant::now();
    let proc = common::connector_proc(&cfg, &log, "warn", &base_env);
    common::wait_done(&topics, Duration::from_secs(180)).await;
    let recovered = started.elapsed().as_secs_f64();
    assert!(proc.terminate(Duration::from_secs(60)).success(), "SIGTERM exits 0");
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line(&format!("crash_{scenario}"), recovered));
    println!(
        "crash_{scenario}: jobs={} (after the restart {}) credits_charged={} credits_recharged={} identifiers_submitted_twice={}",
        stats.submits_accepted,
        stats.submits_accepted - before.submits_accepted,
        stats.credits_charged,
        stats.credits_recharged,
        stats.identifiers_submitted_more_than_once
    );
    audit.assert_nothing_lost(scenario);
    audit.assert_all_valid_resolved(N);
    assert_eq!(stats.credits_recharged, 0, "{scenario}: no credit charged twice");
    for o in &audit.outputs {
        let v = o.json();
        assert!(v["matches"].is_array(), "{scenario}: a real result: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_the_submit_leaves() {
    crash_at("before_submit", Some("submit.before_request")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_the_submit_is_on_the_wire() {
    crash_at("on_the_wire", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_answer_before_the_journal_write() {
    crash_at("after_answer", Some("submit.after_answer")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_journal_write() {
    crash_at("after_journal", Some("submit.after_journal")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_polling() {
    crash_at("polling", Some("wait.poll")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_download_before_publishing() {
    crash_at("after_download", Some("collect.after_download")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_halfway_through_publishing() {
    crash_at("publishing", Some("publish.halfway")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_publishing_before_the_commit() {
    crash_at("before_commit", Some("publish.after_store_handoff")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_the_store_write() {
    crash_at("store_write", Some("store.write_halfway")).await;
}

/// A pod dies with jobs in flight; its peer gets its partitions, finds
/// those jobs in the journal, and once the owner has been silent long
/// enough claims them and finishes them: nothing is paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claims_the_jobs_of_a_pod_that_died_and_pays_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let mut rng = seeded("claim");
    let skip = rng.random_range(0..=1u32);
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(2)).await;
    let topics = Topics::create("crash-claim", 6).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let listens: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", testkit::free_port())).collect();
    let listen = listens[1].clone();
    let dirs: Vec<String> = (0..2).map(|i| common::member_dir(&topics, i)).collect();
    let fp = failpoints("submit.after_journal", skip);
    let doomed = common::connector_proc(
        &cfg,
        &dir.path().join("doomed.log"),
        "warn",
        &[
            ("IDENTIFY_CACHE__DIR", &dirs[0]),
            ("IDENTIFY_KAFKA__INSTANCE_ID", "doomed"),
            ("IDENTIFY_SERVER__LISTEN", &listens[0]),
            ("FAILPOINTS", &fp),
        ],
    );
    let survivor = common::connector_proc(
        &cfg,
        &dir.path().join("survivor.log"),
        "warn",
        &[
            ("IDENTIFY_CACHE__DIR", &dirs[1]),
            ("IDENTIFY_KAFKA__INSTANCE_ID", "survivor"),
            ("IDENTIFY_SERVER__LISTEN", &listen),
        ],
    );
    let settled = async {
        loop {
            let mut each = Vec::new();
            for a in &listens {
                each.push(testkit::metrics::scrape(a, "identify_assigned_partitions").await);
            }
            if each.iter().all(|n| *n >= 1.0) && each.iter().sum::<f64>() == 6.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), settled)
        .await
        .expect("both members own partitions");
    kafka::produce(&topics.input, 6, &common::emails(3_000, "claim")).await;
    died(doomed, "submit.after_journal").await;
    let started = Instant::now();
    common::wait_done(&topics, Duration::from_secs(180)).await;
    let claimed = testkit::metrics::scrape(&listen, "identify_jobs_adopted_total").await;
    assert!(survivor.terminate(Duration::from_secs(60)).success());
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!(
        "{}",
        audit.result_line("crash_claimed_by_a_peer", started.elapsed().as_secs_f64())
    );
    println!(
        "crash_claimed_by_a_peer: jobs={} taken_up={claimed} credits_charged={} credits_recharged={}",
        stats.submits_accepted, stats.credits_charged, stats.credits_recharged
    );
    audit.assert_nothing_lost("claim");
    audit.assert_all_valid_resolved(3_000);
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
    assert!(claimed >= 1.0, "the survivor claimed the dead pod's jobs");
}

//! Pay once: no credit is charged twice whatever fails. The simulator's
//! ledger (`credits_recharged`: credits charged for an identifier already
//! charged before) is the judge.
//!
//! - SIGKILL at the worst moments: while a submit's answer is on the wire
//!   (the job exists, its id is not yet known), and within 100 ms after the
//!   answer (before or while the journal records it), repeated;
//! - restarts (SIGTERM, SIGKILL, and with the local store wiped) and the
//!   same identifiers again;
//! - three replicas in one group, each seeing identifiers another resolved;
//! - API faults on accepted jobs: 500s on status and downloads, a 30-second
//!   status outage, truncated and corrupt files, expired links, lost submit
//!   answers;
//! - the store topic refusing every write for 20 s, then a SIGKILL;
//! - a new pod after 10,000 closed jobs and 3 in flight whose owner is gone.
//!
//! The random moments come from a seed, printed; `PAY_ONCE_SEED=N` replays.
//! The scenarios run one at a time (they share two cores with the broker).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{kafka, Connector, ConnectorProc, Topics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seeded(scenario: &str) -> StdRng {
    let seed = std::env::var("PAY_ONCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{scenario}: seed {seed} (PAY_ONCE_SEED={seed} replays it)");
    StdRng::seed_from_u64(seed)
}

/// The test configuration with a 3 s session, so that a restarted member
/// is not kept waiting for a dead one long.
fn write_config(dir: &Path, topics: &Topics, base_url: &str) -> PathBuf {
    let toml = common::toml_for(topics, base_url)
        .replace(r#""session.timeout.ms" = "6000""#, r#""session.timeout.ms" = "3000""#);
    let path = dir.join("connector.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Waits (polling every 2 ms) until the simulator accepted another submit.
async fn next_submit(sim: &crustdata_sim::SimHandle, limit: Duration) -> bool {
    let before = sim.stats().submits_accepted;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if sim.stats().submits_accepted > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_submit_is_on_the_wire_or_just_answered_pays_nothing_twice() {
    let _serial = SERIAL.lock().await;
    const N: usize = 20_000;
    let mut rng = seeded("sigkill_at_submits");
    let sim = common::start_sim(|c| {
        // Every answer spends 40-80 ms on the wire, after the request was
        // handled: a submit's job exists before its id reaches the connector.
        c.request_latency_min = Duration::from_millis(40);
        c.request_latency_max = Duration::from_millis(80);
        c.base_time = Duration::from_millis(800);
    })
    .await;
    let topics = Topics::create("payonce-kill", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "kill")).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let log = dir.path().join("connector.log");

    let mut strikes = Vec::new();
    for round in 1..=4 {
        let mut proc = common::connector_proc(&cfg, &log, "warn", &[]);
        // Let it get going, then strike at the next submit.
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..=2500))).await;
        assert!(
            proc.try_wait().is_none(),
            "round {round}: the connector exited on its own:\n{}",
            proc.stderr()
        );
        if !next_submit(&sim, Duration::from_secs(20)).await {
            proc.kill();
            println!("round {round}: no submit to strike at (the work is done)");
            break;
        }
        let moment = if round % 2 == 1 {
            // The job exists; its answer is still on the wire.
            "answer_on_the_wire".to_string()
        } else {
            // The answer arrived at most 100 ms ago.
            let after = 80 + rng.random_range(0..=100);
            tokio::time::sleep(Duration::from_millis(after)).await;
            format!("{}ms_after_the_answer", after - 80)
        };
        proc.kill();
        println!("round {round}: SIGKILL {moment}");
        strikes.push(moment);
    }
    assert!(strikes.len() >= 3, "at least 3 strikes during the run: {strikes:?}");

    let proc = common::connector_proc(&cfg, &log, "warn", &[]);
    common::wait_done(&topics, Duration::from_secs(180)).await;
    let status = proc.terminate(Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("sigkill_at_submits", 0.0));
    println!(
        "sigkill_at_submits: strikes={} jobs={} credits_charged={} credits_recharged={} identifiers_submitted_twice={}",
        strikes.len(),
        stats.submits_accepted,
        stats.credits_charged,
        stats.credits_recharged,
        stats.identifiers_submitted_more_than_once
    );
    audit.assert_nothing_lost("sigkill at submits");
    audit.assert_all_valid_resolved(N);
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_a_wiped_disk_pay_nothing_again_for_the_same_identifiers() {
    let _serial = SERIAL.lock().await;
    const N: usize = 3_000;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("payonce-restart", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let log = dir.path().join("connector.log");
    let events = common::emails(N, "again");

    kafka::produce(&topics.input, 3, &events).await;
    let mut proc = common::connector_proc(&cfg, &log, "warn", &[]);
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let first = sim.stats();
    assert!(first.credits_charged > 0);

    for phase in ["after_sigterm", "after_sigkill", "after_disk_wiped"] {
        match phase {
            "after_sigkill" => proc.kill(),
            _ => assert!(proc.terminate(Duration::from_secs(60)).success()),
        }
        if phase == "after_disk_wiped" {
            std::fs::remove_dir_all(common::cache_dir(&topics)).unwrap();
        }
        kafka::produce(&topics.input, 3, &events).await;
        proc = common::connector_proc(&cfg, &log, "warn", &[]);
        common::wait_done(&topics, Duration::from_secs(120)).await;
        let now = sim.stats();
        println!(
            "restart {phase}: jobs={} credits_charged={} credits_recharged={}",
            now.submits_accepted, now.credits_charged, now.credits_recharged
        );
        assert_eq!(now.credits_recharged, 0, "{phase}: no credit charged twice");
        assert_eq!(
            now.submits_accepted, first.submits_accepted,
            "{phase}: the same identifiers need no job at all"
        );
    }
    assert!(proc.terminate(Duration::from_secs(60)).success());
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("restart_same_identifiers", 0.0));
    audit.assert_nothing_lost("restarts");
    assert_eq!(audit.inputs, 4 * N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identifier_one_replica_resolved_is_not_paid_again_by_another() {
    let _serial = SERIAL.lock().await;
    const N: usize = 1_800;
    const MEMBERS: usize = 3;
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("payonce-replicas", 6).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let dirs: Vec<String> = (0..MEMBERS).map(|i| common::member_dir(&topics, i)).collect();
    let members: Vec<ConnectorProc> = (0..MEMBERS)
        .map(|i| {
            let log = dir.path().join(format!("member-{i}.log"));
            common::connector_proc(&cfg, &log, "warn", &[("IDENTIFY_CACHE__DIR", &dirs[i])])
        })
        .collect();
    let events = common::emails(N, "replica");
    kafka::produce(&topics.input, 6, &events).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let first = sim.stats();
    // The store's tail brings every result to every replica within about a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The same identifiers, each on the next partition (owned by another
    // member in most cases).
    let mut shifted = events.clone();
    shifted.rotate_left(1);
    kafka::produce(&topics.input, 6, &shifted).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let now = sim.stats();
    for m in members {
        assert!(m.terminate(Duration::from_secs(60)).success());
    }
    println!(
        "replicas: jobs_first={} jobs_after={} credits_charged={} credits_recharged={}",
        first.submits_accepted, now.submits_accepted, now.credits_charged, now.credits_recharged
    );
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("three_replicas_share_results", 0.0));
    audit.assert_nothing_lost("replicas");
    assert_eq!(now.credits_recharged, 0, "no credit charged twice");
    assert_eq!(
        now.submits_accepted, first.submits_accepted,
        "no new job for known identifiers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_on_accepted_jobs_pay_nothing_twice() {
    let _serial = SERIAL.lock().await;
    const N: usize = 3_000;
    let sim = common::start_sim(|c| {
        c.error_rate_poll = 0.15;
        c.error_rate_download = 0.15;
        c.truncate_rate = 0.1;
        c.corrupt_rate = 0.1;
        c.expired_link_rate = 0.1;
        c.lost_response_rate = 0.1;
        c.base_time = Duration::from_secs(1);
    })
    .await;
    let topics = Topics::create("payonce-faults", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "faults")).await;
    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    kafka::wait_for("the first jobs", Duration::from_secs(30), || {
        sim.stats().submits_accepted >= 2
    })
    .await;
    // A 30-second outage of the status endpoint while jobs run.
    sim.update(|c| c.error_rate_poll = 1.0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    sim.update(|c| c.error_rate_poll = 0.15);
    common::wait_done(&topics, Duration::from_secs(240)).await;
    let metrics = connector.metrics();
    connector.stop().await;
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("api_faults_pay_once", 0.0));
    println!(
        "api_faults_pay_once: jobs={} lost_answers={} damaged_downloads={} injected_500s={} credits_charged={} credits_recharged={} lost_submits_found={}",
        stats.submits_accepted,
        stats.submit_answers_lost,
        stats.downloads_damaged,
        stats.injected_500s,
        stats.credits_charged,
        stats.credits_recharged,
        common::metric(&metrics, "identify_lost_submits_total"),
    );
    audit.assert_nothing_lost("api faults");
    audit.assert_all_valid_resolved(N);
    assert!(
        stats.submit_answers_lost > 0 && stats.downloads_damaged > 0,
        "the faults happened"
    );
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
}

/// The store topic of `topics`' connectors (the default `cache.topic`).
fn store_topic(topics: &Topics) -> String {
    format!("{}.identify-cache", topics.group)
}

/// The store topic refuses every write for 20 s (a record batch larger than
/// its `max.message.bytes`) while five 8-second jobs run: they complete,
/// their results cannot be stored, so they cannot close, and no new job is
/// submitted (its journal record cannot be written ahead). Then a SIGKILL,
/// the topic takes writes again, a restart, and the same identifiers
/// again: the open jobs are finished from the journal, their results
/// stored, and nothing is paid twice (earlier versions wrote such a job
/// done although its results were not stored: the identifiers came back,
/// were found neither in the store nor in flight, and were paid again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_writes_refused_then_a_sigkill_and_a_restart_pay_nothing_twice() {
    let _serial = SERIAL.lock().await;
    const N: usize = 3_000;
    let sim = common::start_sim(|c| {
        c.base_time = Duration::from_secs(8);
        c.jitter = Duration::ZERO;
    })
    .await;
    let topics = Topics::create("payonce-refused", 3).await;
    let events = common::emails(N, "refused");
    kafka::produce(&topics.input, 3, &events).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let log = dir.path().join("connector.log");
    let env = [("IDENTIFY_KAFKA__INSTANCE_ID", "refused-pod")];
    let proc = common::connector_proc(&cfg, &log, "warn", &env);
    kafka::wait_for("the first five jobs", Duration::from_secs(60), || {
        sim.stats().submits_accepted >= 5
    })
    .await;
    let store = store_topic(&topics);
    kafka::set_topic_config(&store, "max.message.bytes", Some("512")).await;
    let refused_at = sim.stats();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = sim.stats();
    proc.kill();
    kafka::set_topic_config(&store, "max.message.bytes", None).await;
    println!(
        "store_refused: jobs before the refusal {}, completed during it {}, submitted during it {}",
        refused_at.submits_accepted,
        during.jobs_completed - refused_at.jobs_completed,
        during.submits_accepted - refused_at.submits_accepted
    );
    assert!(
        during.jobs_completed >= 5,
        "the first jobs completed during the refusal"
    );
    let proc = common::connector_proc(&cfg, &log, "warn", &env);
    common::wait_done(&topics, Duration::from_secs(180)).await;
    let first_round = sim.stats();
    // The same identifiers again: every one of them was resolved once.
    kafka::produce(&topics.input, 3, &events).await;
    common::wait_done(&topics, Duration::from_secs(180)).await;
    assert!(proc.terminate(Duration::from_secs(60)).success());
    let stats = sim.stats();
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("store_writes_refused", 0.0));
    println!(
        "store_refused: jobs={} (for the same identifiers again {}) credits_charged={} credits_recharged={} identifiers_submitted_twice={}",
        stats.submits_accepted,
        stats.submits_accepted - first_round.submits_accepted,
        stats.credits_charged,
        stats.credits_recharged,
        stats.identifiers_submitted_more_than_once
    );
    audit.assert_nothing_lost("store refused");
    assert_eq!(audit.inputs, 2 * N);
    assert!(audit.dlq.is_empty());
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
    assert_eq!(
        stats.submits_accepted, first_round.submits_accepted,
        "the same identifiers again need no job: every result reached the store"
    );
    assert_eq!(
        during.submits_accepted, refused_at.submits_accepted,
        "no job is submitted while its journal record cannot be written ahead"
    );
}

/// A journal record as another pod wrote it (the store topic's format,
/// docs/DESIGN.md).
fn journal_record(job: &str, value: serde_json::Value) -> (Option<String>, Vec<u8>) {
    (Some(format!("j/{job}")), serde_json::to_vec(&value).unwrap())
}

/// A new pod with an empty disk, after 10,000 closed jobs and 3 in flight
/// whose owner is gone: it reads the whole journal, resumes exactly the 3
/// (by claiming them), and pays for none of their identifiers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_resumes_only_the_jobs_in_flight_among_ten_thousand_closed_ones() {
    let _serial = SERIAL.lock().await;
    const CLOSED: usize = 10_000;
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(1)).await;
    let topics = Topics::create("payonce-journal", 3).await;
    let store = store_topic(&topics);
    kafka::create_topics(&[(&store, 6)]).await;
    kafka::set_topic_config(&store, "cleanup.policy", Some("compact,delete")).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut records: Vec<(Option<String>, Vec<u8>)> = (0..CLOSED)
        .map(|i| {
            journal_record(
                &format!("00000000-0000-4000-8000-{i:012}"),
                serde_json::json!({"v": 2, "identifier_type": "business_email", "owner": "pod-gone",
                    "stage": "closed", "outcome": "published", "batch_id": format!("old-{i}"), "at_ms": now_ms - 1000}),
            )
        })
        .collect();
    // Three jobs the gone pod had in flight: really submitted to the API.
    let client = reqwest::Client::new();
    let mut in_flight = Vec::new();
    for j in 0..3 {
        let ids: Vec<String> = (0..100).map(|i| format!("inflight{j}-{i}@example.com")).collect();
        let answer: serde_json::Value = client
            .post(format!("{}/batch/person/identify", sim.base_url()))
            .bearer_auth(common::KEY)
            .header("x-api-version", crustdata_sim::API_VERSION)
            .json(&serde_json::json!({ "business_emails": ids }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let batch = answer["batch_id"].as_str().unwrap().to_string();
        records.push(journal_record(
            &format!("10000000-0000-4000-8000-00000000000{j}"),
            serde_json::json!({"v": 2, "identifier_type": "business_email", "ids": ids, "owner": "pod-gone",
                "stage": "accepted", "attempt": 1, "batch_id": batch, "at_ms": now_ms}),
        ));
        in_flight.extend(ids);
    }
    kafka::produce(&store, 6, &records).await;
    let events: kafka::Records = in_flight.iter().map(|e| (None, common::event(e))).collect();
    kafka::produce(&topics.input, 3, &events).await;
    let before = sim.stats();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &topics, &sim.base_url());
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let proc = common::connector_proc(
        &cfg,
        &dir.path().join("connector.log"),
        "info",
        &[("IDENTIFY_SERVER__LISTEN", &addr)],
    );
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(proc.terminate(Duration::from_secs(60)).success());
    let claimed = testkit::metrics::metric_with(&text, "identify_jobs_adopted_total", r#"source="claim""#);
    let applied = common::metric(&text, "identify_store_records_applied_total");
    let restore = common::metric(&text, "identify_store_restore_seconds");
    let stats = sim.stats();
    println!(
        "journal_restore: closed={CLOSED} in_flight=3 records_read={applied} restore_seconds={restore:.2} resumed={claimed:?} new_jobs={}",
        stats.submits_accepted - before.submits_accepted
    );
    assert_eq!(claimed, Some(3.0), "exactly the jobs in flight were taken up");
    assert!(applied >= (CLOSED + 3) as f64, "{applied}");
    assert_eq!(
        stats.submits_accepted, before.submits_accepted,
        "nothing submitted again"
    );
    assert_eq!(stats.identifiers_submitted_more_than_once, 0);
    let audit = common::audit(&topics);
    audit.assert_nothing_lost("journal restore");
    audit.assert_all_valid_resolved(300);
}

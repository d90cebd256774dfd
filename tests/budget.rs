//! Credit budgets, on a real broker against the simulator's ledger: a
//! ceiling is never passed (and not undershot by much), a spent budget
//! halts submitting visibly without dropping anything while cache hits
//! are still answered, the pipeline resumes by itself when the window
//! rolls, and three pods on one budget keep to it together.

mod common;

use std::time::{Duration, Instant};

use common::{kafka, Connector, Topics};
use testkit::metrics::scrape_with;

const BUDGET: u64 = 1_000;
const N: usize = 6_000;
/// The "hour" of these tests: long enough to watch the halt, short enough
/// for the run to go on in the next windows.
const WINDOW: Duration = Duration::from_secs(30);

async fn readyz(http: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until the simulator's credits stop moving for `quiet`.
async fn charged_settles(sim: &crustdata_sim::SimHandle, quiet: Duration, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = (sim.stats().credits_charged, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sim.stats().credits_charged;
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= quiet && sim.stats().active_jobs == 0 {
            return now;
        }
        assert!(Instant::now() < deadline, "credits still moving after {limit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_halts_without_dropping_and_resumes_when_the_window_rolls() {
    let sim = common::start_sim(|c| {
        c.match_rate = 0.6;
        c.base_time = Duration::from_millis(800);
    })
    .await;
    let topics = Topics::create("budget-halt", 3).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.budget.credits_per_hour = Some(BUDGET);
    cfg.budget.hour_length = WINDOW;
    let connector = Connector::start(cfg).await;
    let http = connector.running.http_addr.to_string();
    // Start at the beginning of a window, so that the halt is watched
    // inside one.
    let into = (chrono::Utc::now().timestamp_millis() as u64) % WINDOW.as_millis() as u64;
    tokio::time::sleep(WINDOW - Duration::from_millis(into) + Duration::from_millis(200)).await;
    let window_start = Instant::now();
    kafka::produce(&topics.input, 3, &common::emails(N, "budget")).await;
    kafka::wait_for("the budget to halt submitting", Duration::from_secs(15), || {
        common::metric(&connector.metrics(), "identify_budget_halted") == 1.0
    })
    .await;
    let charged = charged_settles(&sim, Duration::from_secs(2), WINDOW).await;
    let (code, why) = readyz(&http).await;
    assert_eq!(code, 503, "{why}");
    assert!(
        why.starts_with("budget: the hour credit budget is spent until"),
        "{why}"
    );
    // Cache hits are still answered during the halt: identifiers already
    // resolved, sent again.
    let outputs: Vec<_> = kafka::read_all(&topics.output, 3);
    let known: Vec<String> = outputs
        .iter()
        .take(50)
        .map(|r| r.json()["identifier"].as_str().unwrap().to_string())
        .collect();
    let before = outputs.len();
    let again: kafka::Records = known.iter().map(|e| (None, common::event(e))).collect();
    kafka::produce(&topics.input, 3, &again).await;
    kafka::wait_for("cache hits during the halt", Duration::from_secs(10), || {
        kafka::end_offsets(&topics.output, 3).iter().sum::<i64>() >= (before + known.len()) as i64
    })
    .await;
    // The backlog's cost is forecast (statistics give the lag every 5 s).
    kafka::wait_for("a forecast of the backlog's cost", Duration::from_secs(10), || {
        common::metric(&connector.metrics(), "identify_budget_forecast_credits") > 0.0
    })
    .await;
    let m = connector.metrics();
    let forecast = common::metric(&m, "identify_budget_forecast_credits");
    let remaining = common::metric(&m, "identify_budget_remaining_credits");
    let in_window = window_start.elapsed();
    let still_halted = common::metric(&connector.metrics(), "identify_budget_halted");
    let charged_in_window = sim.stats().credits_charged;
    println!(
        "budget: charged={charged} (then {charged_in_window}) of {BUDGET} in the first window, watched for {in_window:?}, readyz={code} {why:?} forecast={forecast} remaining={remaining}"
    );
    assert!(
        remaining <= (BUDGET - charged.min(BUDGET)) as f64,
        "{remaining} credits said to remain"
    );
    assert!(in_window < WINDOW, "the halt was watched inside one window");
    assert_eq!(still_halted, 1.0);
    assert!(
        charged_in_window <= BUDGET,
        "{charged_in_window} credits charged in a window of {BUDGET}"
    );
    assert!(
        charged >= 700,
        "only {charged} of {BUDGET} credits used: halting early is not a pass"
    );
    assert_eq!(common::audit(&topics).dlq.len(), 0, "nothing dead-lettered");
    // The next windows: it resumes by itself and finishes.
    common::wait_done(&topics, Duration::from_secs(300)).await;
    let metrics = connector.metrics();
    connector.stop().await;
    let audit = common::audit(&topics);
    let stats = sim.stats();
    println!("{}", audit.result_line("budget_halt", 0.0));
    println!(
        "budget: total charged={} recharged={} windows={:.1}",
        stats.credits_charged,
        stats.credits_recharged,
        window_start.elapsed().as_secs_f64() / WINDOW.as_secs_f64()
    );
    audit.assert_nothing_lost("budget");
    assert_eq!(audit.dlq.len(), 0);
    assert_eq!(stats.credits_recharged, 0, "nothing paid twice");
    assert_eq!(common::metric(&metrics, "identify_budget_halted"), 0.0, "resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_on_one_budget_keep_to_it_together() {
    const MEMBERS: usize = 3;
    for round in 0..2 {
        let sim = common::start_sim(|c| {
            c.match_rate = 0.6;
            c.base_time = Duration::from_millis(800);
        })
        .await;
        let topics = Topics::create(&format!("budget-team-{round}"), 6).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("connector.toml");
        let toml = common::toml_for(&topics, &sim.base_url()) + &format!("[budget]\ncredits_per_hour = {BUDGET}\n");
        std::fs::write(&cfg, toml).unwrap();
        let ports: Vec<u16> = (0..MEMBERS).map(|_| testkit::free_port()).collect();
        let members: Vec<_> = (0..MEMBERS)
            .map(|i| {
                let log = dir.path().join(format!("member-{i}.log"));
                let cache = common::member_dir(&topics, i);
                let listen = format!("127.0.0.1:{}", ports[i]);
                let instance = format!("budget-{round}-{i}");
                common::connector_proc(
                    &cfg,
                    &log,
                    "warn",
                    &[
                        ("IDENTIFY_CACHE__DIR", &cache),
                        ("IDENTIFY_SERVER__LISTEN", &listen),
                        ("IDENTIFY_KAFKA__INSTANCE_ID", &instance),
                    ],
                )
            })
            .collect();
        let client = reqwest::Client::new();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let joined = async {
            loop {
                let mut ok = true;
                for a in &addrs {
                    ok &= scrape_with(&client, a, "identify_assigned_partitions").await >= 1.0;
                }
                if ok {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), joined)
            .await
            .expect("every member owns partitions within 60 s");
        // Started together: the backlog reaches all three at once.
        kafka::produce(&topics.input, 6, &common::emails(N, &format!("team{round}"))).await;
        let halted = async {
            loop {
                let mut all = true;
                for a in &addrs {
                    all &= scrape_with(&client, a, "identify_budget_halted").await == 1.0;
                }
                if all {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), halted).await.is_err() {
            let mut state = Vec::new();
            for a in &addrs {
                let m = reqwest::get(format!("http://{a}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let names = [
                    "identify_budget_halted",
                    "identify_active_jobs",
                    "identify_budget_remaining_credits",
                    "identify_in_flight_records",
                    "identify_slot_share",
                    "identify_assigned_partitions",
                ];
                let values: Vec<String> = names
                    .iter()
                    .map(|n| format!("{}={}", n.trim_start_matches("identify_"), common::metric(&m, n)))
                    .collect();
                state.push((values.join(" "), readyz(a).await));
            }
            let logs: Vec<String> = (0..MEMBERS)
                .map(|i| std::fs::read_to_string(dir.path().join(format!("member-{i}.log"))).unwrap_or_default())
                .collect();
            panic!(
                "round {round}: not every member halted within 60 s (charged {}): {state:?}\n{}",
                sim.stats().credits_charged,
                logs.join("\n----\n")
            );
        }
        let charged = charged_settles(&sim, Duration::from_secs(3), Duration::from_secs(60)).await;
        let mut reasons = Vec::new();
        for a in &addrs {
            reasons.push(readyz(a).await);
        }
        let dlq = common::audit(&topics).dlq.len();
        for m in members {
            assert!(
                m.terminate(Duration::from_secs(60)).success(),
                "a clean stop while halted"
            );
        }
        println!("budget_team round {round}: charged={charged} of {BUDGET} dead_lettered={dlq}");
        assert!(
            charged <= BUDGET,
            "round {round}: {charged} credits charged on a budget of {BUDGET}"
        );
        assert!(charged >= 700, "round {round}: only {charged} credits used");
        assert_eq!(dlq, 0);
        for (code, why) in reasons {
            assert_eq!(code, 503);
            assert!(why.starts_with("budget:"), "{why}");
        }
    }
}

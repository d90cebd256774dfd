//! Steady jobs lend their slot at their first poll: the next batch is
//! submitted the moment a job like them ends, not a status answer later.
//! When the API turns slower mid-run, those early submits meet 429s: the
//! batch waits for a confirmed slot instead, the job slots do not shrink,
//! nothing is lost and no identifier is paid for twice.

mod common;

use std::time::Duration;

use common::{kafka, metric, Connector, Topics};
use testkit::metrics::metric_with;

/// Jobs of exactly 400 ms, whatever they hold.
fn steady_jobs(c: &mut crustdata_sim::SimConfig) {
    c.base_time = Duration::from_millis(400);
    c.per_identifier_time = Duration::ZERO;
    c.retrieval_time = Duration::ZERO;
    c.jitter = Duration::ZERO;
}

/// Jobs of 30 identifiers, and the five slots the limit, not the request
/// budget.
fn slot_bound_config(topics: &Topics, base_url: &str) -> identify_connector::Config {
    let mut cfg = common::config(topics, base_url);
    cfg.batch.max_size = 30;
    cfg.api.requests_per_minute = 60_000;
    cfg
}

/// `identify_jobs_due_total{found}` in `metrics`.
fn due(metrics: &str, found: &str) -> f64 {
    metric_with(metrics, "identify_jobs_due_total", &format!(r#"found="{found}""#)).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_jobs_lend_their_slots_and_a_slower_api_costs_a_few_refused_early_submits() {
    const N: usize = 1_800;
    let sim = common::start_sim(|c| {
        steady_jobs(c);
        c.request_latency_min = Duration::from_millis(2);
        c.request_latency_max = Duration::from_millis(10);
    })
    .await;
    let topics = Topics::create("early-start", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "early")).await;
    let cfg = slot_bound_config(&topics, &sim.base_url());
    let connector = Connector::start(cfg).await;
    // Once the schedule has learnt the steady 400 ms, the API slows down to
    // 700 ms: the next first polls come early and the slots they lend are
    // still taken.
    kafka::wait_for("20 jobs accepted", Duration::from_secs(60), || {
        sim.stats().submits_accepted >= 20
    })
    .await;
    let lent_before = due(&connector.metrics(), "ended");
    sim.update(|c| c.base_time = Duration::from_millis(700));
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let metrics = connector.metrics();
    connector.stop().await;

    let audit = common::audit(&topics);
    audit.assert_nothing_lost("early starts");
    audit.assert_all_valid_resolved(N);
    let stats = sim.stats();
    let (ended, still_running) = (due(&metrics, "ended"), due(&metrics, "still_running"));
    println!(
        "early_start: jobs={} lent_before_slowdown={lent_before} due_ended={ended} due_still_running={still_running} 429_active_jobs={} max_active_per_key={}",
        stats.submits_accepted, stats.rate_limited_active_jobs, stats.max_active_jobs_per_key
    );
    assert!(lent_before >= 5.0, "steady jobs lent their slots: {lent_before}");
    assert!(still_running >= 1.0, "the slowdown made first polls early");
    assert!(stats.rate_limited_active_jobs >= 1, "an early submit met a 429");
    assert!(
        stats.rate_limited_active_jobs as f64 <= still_running,
        "at most one refused early submit per early first poll: {} 429s, {still_running} early polls",
        stats.rate_limited_active_jobs
    );
    assert!(stats.max_active_jobs_per_key <= 5);
    // A refused early submit is no sign of other pods: no retry of it, so
    // no halving of the job slots.
    assert_eq!(
        metric_with(
            &metrics,
            "identify_api_retries_total",
            r#"endpoint="submit",error="rate_limited""#
        )
        .unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        stats.identifiers_submitted_more_than_once, 0,
        "no identifier submitted twice"
    );
    assert_eq!(stats.credits_recharged, 0, "no credit paid twice");
    assert_eq!(metric(&metrics, "identify_records_produced_total"), N as f64);
}

/// An API that calls back on every change, not only at the end: the
/// callbacks for `processing` lend slots that are still taken. The first
/// that finds its job running stops callbacks from lending for good; at
/// most the jobs already called back meanwhile (one wave) tried early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_before_the_end_stop_lending_slots_after_the_first_wave() {
    const N: usize = 600;
    let sim = common::start_sim(|c| {
        steady_jobs(c);
        c.pending_time = Duration::from_millis(100);
        c.webhook_on_processing = true;
    })
    .await;
    let topics = Topics::create("early-callbacks", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(N, "hooked")).await;
    let port = testkit::free_port();
    let mut cfg = slot_bound_config(&topics, &sim.base_url());
    cfg.server.listen = format!("127.0.0.1:{port}");
    cfg.webhook.public_url = format!("http://127.0.0.1:{port}");
    cfg.webhook.fallback_poll_interval = Duration::from_millis(300);
    let connector = Connector::start(cfg).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let metrics = connector.metrics();
    connector.stop().await;

    let audit = common::audit(&topics);
    audit.assert_nothing_lost("callbacks before the end");
    audit.assert_all_valid_resolved(N);
    let stats = sim.stats();
    let still_running = due(&metrics, "still_running");
    println!(
        "early_callbacks: jobs={} webhooks_sent={} due_still_running={still_running} 429_active_jobs={}",
        stats.submits_accepted, stats.webhooks_sent, stats.rate_limited_active_jobs
    );
    assert!(
        stats.webhooks_sent >= 2 * stats.submits_accepted,
        "two callbacks per job"
    );
    assert!(
        (1.0..=5.0).contains(&still_running),
        "{still_running} callbacks lent a slot that was still taken"
    );
    assert!(
        stats.rate_limited_active_jobs <= 5,
        "{} 429s",
        stats.rate_limited_active_jobs
    );
    assert_eq!(
        stats.identifiers_submitted_more_than_once, 0,
        "no identifier submitted twice"
    );
    assert_eq!(stats.credits_recharged, 0, "no credit paid twice");
}

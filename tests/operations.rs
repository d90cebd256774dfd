//! Operations: job completion through webhook callbacks, forged and
//! oversized callbacks refused, `/metrics` scraped over HTTP agreeing
//! with what the run did, and the lag in seconds.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{kafka, Connector, Topics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_complete_jobs_with_at_most_two_status_requests() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("hooks", 3).await;
    let mut records: kafka::Records = (0..1200)
        .map(|i| {
            (
                Some(format!("k{i}")),
                common::event(&format!("hook{}@example{}.com", i % 1000, i % 1000 % 7)),
            )
        })
        .collect();
    records.push((Some("bad".into()), b"{not json".to_vec()));
    kafka::produce(&topics.input, 3, &records).await;

    let port = testkit::free_port();
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.server.listen = format!("127.0.0.1:{port}");
    cfg.webhook.public_url = format!("http://127.0.0.1:{port}");
    // Polling alone would take a minute per job: only callbacks can finish in time.
    cfg.webhook.fallback_poll_interval = Duration::from_secs(60);
    let connector = Connector::start(cfg).await;
    let http = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // A forged token changes nothing.
    let forged = client
        .post(format!("{http}/webhooks/crustdata/00000000000000000000000000000000"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    let huge = client
        .post(format!("{http}/webhooks/crustdata/x"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413, "oversized bodies are refused");
    // Other forged shapes: one digit short, overlong, encoded traversal, non-ASCII.
    let forged_shapes = [
        "0".repeat(31),
        "f".repeat(4096),
        "..%2F..%2Fmetrics".to_string(),
        "%C3%A9t%C3%A9".to_string(),
    ];
    for token in &forged_shapes {
        let r = client
            .post(format!("{http}/webhooks/crustdata/{token}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "forged token {token:.40}");
    }
    let forged_total = 1 + forged_shapes.len();

    common::wait_done(&topics, Duration::from_secs(60)).await;
    let stats = sim.stats();
    let scraped = client
        .get(format!("{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    connector.stop().await;

    let audit = common::audit(&topics);
    println!(
        "{} jobs={} polls={} webhooks_sent={}",
        audit.summary("webhooks"),
        stats.submits_accepted,
        stats.polls,
        stats.webhooks_sent
    );
    assert!(audit.lost.is_empty());
    assert_eq!(stats.webhooks_sent, stats.submits_accepted, "every job called back");
    assert!(
        stats.polls <= 2 * stats.submits_accepted,
        "{} status requests for {} jobs",
        stats.polls,
        stats.submits_accepted
    );
    assert_eq!(
        common::metric(&scraped, "identify_webhook_callbacks_total"),
        (stats.webhooks_sent + forged_total as u64) as f64
    );
    assert!(
        scraped.contains(&format!(
            r#"identify_webhook_callbacks_total{{result="rejected"}} {forged_total}"#
        )),
        "forged tokens counted"
    );

    // The scrape agrees with the run.
    let matched: HashSet<&str> = audit
        .outputs
        .iter()
        .filter(|r| r.json()["matched"] == true)
        .map(|r| std::str::from_utf8(r.key.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(common::metric(&scraped, "identify_records_consumed_total"), 1201.0);
    assert_eq!(common::metric(&scraped, "identify_records_produced_total"), 1200.0);
    assert!(scraped.contains(r#"identify_dead_letters_total{reason="not_parseable"} 1"#));
    assert_eq!(
        common::metric(&scraped, "identify_credits_spent_total"),
        matched.len() as f64
    );
    assert_eq!(
        common::metric(&scraped, "identify_credits_spent_total"),
        stats.credits_charged as f64
    );
    assert_eq!(
        common::metric(&scraped, "identify_credits_saved_total"),
        200.0,
        "200 repeats not paid for"
    );
    assert_eq!(
        common::metric(&scraped, "identify_jobs_submitted_total"),
        stats.submits_accepted as f64
    );
    assert!(
        common::metric(&scraped, "identify_commits_total") >= 1.0,
        "{}",
        scraped
            .lines()
            .filter(|l| l.contains("commit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("health", 1).await;
    kafka::produce(&topics.input, 1, &[(None, common::event("lag@example.com"))]).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    cfg.kafka.consumer.insert("statistics.interval.ms".into(), "200".into());
    let connector = Connector::start(cfg).await;
    let http = connector.running.http_addr;
    let get = |path: &'static str| async move { reqwest::get(format!("http://{http}{path}")).await.unwrap() };
    assert_eq!(get("/healthz").await.status(), 200);
    kafka::wait_for("ready", Duration::from_secs(30), || connector.running.ready()).await;
    let ready = get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let metrics = get("/metrics").await;
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    for name in [
        "identify_records_consumed_total",
        "identify_active_jobs",
        "identify_in_flight_records",
        "identify_credits_spent_total",
    ] {
        assert!(text.contains(name), "{name} exported");
    }
    // Consumer lag per partition, from librdkafka's statistics.
    let series = format!(r#"identify_consumer_lag{{partition="0",topic="{}"}}"#, topics.input);
    kafka::wait_for("the consumer lag series", Duration::from_secs(20), || {
        connector.metrics().contains(&series)
    })
    .await;
    connector.stop().await;
}

/// The largest value of any series of `name` in `text`.
fn max_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_in_seconds_rises_during_a_backlog_and_returns_to_zero() {
    // Jobs of 3 s: the records wait that long for their results.
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(3)).await;
    let topics = Topics::create("lagsecs", 3).await;
    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    kafka::wait_for("ready", Duration::from_secs(30), || connector.running.ready()).await;
    // Produced live: their age is the wait for their jobs, not the start-up.
    let records: kafka::Records = (0..900)
        .map(|i| {
            (
                Some(format!("k{i}")),
                common::event(&format!("lag{i}@example{}.com", i % 7)),
            )
        })
        .collect();
    kafka::produce(&topics.input, 3, &records).await;
    let lag = |c: &Connector| max_series(&c.metrics(), "identify_lag_seconds");
    kafka::wait_for(
        "the lag to pass 2 s while the jobs run",
        Duration::from_secs(60),
        || lag(&connector) >= 2.0,
    )
    .await;
    kafka::wait_for("every output", Duration::from_secs(120), || {
        testkit::metrics::metric(&connector.metrics(), "identify_records_produced_total") >= 900.0
    })
    .await;
    // Committed within a commit interval, then reported within a second.
    kafka::wait_for("the lag back to 0", Duration::from_secs(10), || {
        let text = connector.metrics();
        text.contains("identify_lag_seconds{") && max_series(&text, "identify_lag_seconds") == 0.0
    })
    .await;
    // One latency per output (flushed after each producer poll, a second
    // apart at most).
    let count = || testkit::metrics::metric(&connector.metrics(), "identify_end_to_end_latency_seconds_count");
    kafka::wait_for("a latency per output", Duration::from_secs(10), || count() >= 900.0).await;
    assert_eq!(count(), 900.0, "exactly one latency per output");
    let text = connector.metrics();
    let observed = count();
    let sum = testkit::metrics::metric(&text, "identify_end_to_end_latency_seconds_sum");
    assert!(
        sum / observed >= 2.0,
        "records waited for their 3 s jobs: mean {}",
        sum / observed
    );
    connector.stop().await;
}

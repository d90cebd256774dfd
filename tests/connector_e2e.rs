//! The connector end to end on the real broker and the simulator: exactly
//! one output per valid input, dead letters with reasons, commits to the
//! end (also when only the graceful stop commits), credits equal to unique
//! matched identifiers, at most 5 jobs at once.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{kafka, Connector, Topics};

/// 5,000 events over 6 partitions: 1,500 unique emails, repeated (some in
/// other letter case or with spaces) and 250 invalid records of 5 kinds.
fn events() -> (kafka::Records, HashMap<usize, &'static str>) {
    let mut out = Vec::new();
    let mut invalid = HashMap::new();
    for i in 0..5000usize {
        let value = if i % 20 == 7 {
            let (v, reason): (Vec<u8>, &'static str) = match (i / 20) % 5 {
                0 => (b"{not json".to_vec(), "not_parseable"),
                1 => (br#"{"name":"no email"}"#.to_vec(), "missing_field"),
                2 => (br#"{"email":42}"#.to_vec(), "not_a_string"),
                3 => (br#"{"email":"not-an-email"}"#.to_vec(), "invalid_identifier"),
                _ => (br#"{"email":"two@@example.com"}"#.to_vec(), "invalid_identifier"),
            };
            invalid.insert(i, reason);
            v
        } else {
            let n = (i * 7919) % 1500;
            let email = match i % 3 {
                0 => format!("person{n}@company{}.com", n % 37),
                1 => format!("  Person{n}@Company{}.COM ", n % 37),
                _ => format!("person{n}@COMPANY{}.com", n % 37),
            };
            common::event(&email)
        };
        out.push((Some(format!("key-{i}")), value));
    }
    (out, invalid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_exactly_once_output_and_dlq() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("e2e", 6).await;
    let (records, invalid) = events();
    kafka::produce(&topics.input, 6, &records).await;

    let connector = Connector::start(common::config(&topics, &sim.base_url())).await;
    common::wait_done(&topics, Duration::from_secs(120)).await;
    let metrics = connector.metrics();
    connector.stop().await;

    let audit = common::audit(&topics);
    println!("{}", audit.summary("e2e"));
    assert!(
        audit.lost.is_empty(),
        "lost: {:?}",
        &audit.lost[..audit.lost.len().min(10)]
    );
    assert_eq!(audit.duplicates, 0, "a clean run publishes exactly once");
    assert_eq!(audit.outputs.len(), 5000 - invalid.len());
    assert_eq!(audit.dlq.len(), invalid.len());

    // Input i went to partition i % 6 at offset i / 6.
    for d in &audit.dlq {
        let p: usize = d.header("identify.source.partition").parse().unwrap();
        let o: usize = d.header("identify.source.offset").parse().unwrap();
        let i = o * 6 + p;
        assert_eq!(
            Some(d.header("identify.error.reason")),
            invalid.get(&i).copied(),
            "record {i}"
        );
        assert!(!d.header("identify.error.message").is_empty());
        assert_eq!(
            d.key.as_deref(),
            Some(format!("key-{i}").as_bytes()),
            "original key kept"
        );
        assert_eq!(d.value.as_deref(), Some(records[i].1.as_slice()), "original value kept");
    }

    let mut matched = HashSet::new();
    let mut batch_ids = HashSet::new();
    for r in &audit.outputs {
        let v = r.json();
        let id = v["identifier"].as_str().unwrap();
        assert_eq!(r.key.as_deref(), Some(id.as_bytes()), "output key is the identifier");
        assert_eq!(id, id.trim().to_lowercase(), "normalised");
        assert_eq!(v["identifier_type"], "business_email");
        assert_eq!(v["batch_id"].as_str().unwrap(), r.header("identify.batch_id"));
        assert_eq!(v["source"]["topic"], topics.input.as_str());
        assert_eq!(
            v["source"]["offset"].as_i64().unwrap().to_string(),
            r.header("identify.source.offset")
        );
        chrono::DateTime::parse_from_rfc3339(v["resolved_at"].as_str().unwrap()).expect("RFC 3339");
        let matches = v["matches"].as_array().unwrap();
        assert_eq!(v["matched"].as_bool().unwrap(), !matches.is_empty());
        if !matches.is_empty() {
            assert!(matches[0]["person_data"]["crustdata_person_id"].is_number());
            matched.insert(id.to_string());
        }
        batch_ids.insert(v["batch_id"].as_str().unwrap().to_string());
    }

    assert_eq!(
        kafka::committed(&topics.group, &topics.input, 6),
        kafka::end_offsets(&topics.input, 6),
        "committed offsets equal the end offsets"
    );
    let stats = sim.stats();
    println!(
        "e2e: jobs={} credits_charged={} unique_matched={} max_concurrent_jobs={} identifiers_submitted={}",
        stats.submits_accepted,
        stats.credits_charged,
        matched.len(),
        stats.max_concurrent_active_jobs,
        stats.identifiers_submitted
    );
    assert_eq!(
        stats.credits_charged,
        matched.len() as u64,
        "credits = unique matched identifiers"
    );
    let unique: HashSet<String> = audit
        .outputs
        .iter()
        .map(|r| r.json()["identifier"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stats.identifiers_submitted,
        unique.len() as u64,
        "each unique email submitted once"
    );
    assert_eq!(stats.identifiers_submitted_more_than_once, 0);
    assert!(
        stats.max_concurrent_active_jobs <= 5,
        "{}",
        stats.max_concurrent_active_jobs
    );
    assert_eq!(batch_ids.len() as u64, stats.submits_accepted);

    // Metrics agree with what happened.
    assert_eq!(common::metric(&metrics, "identify_records_consumed_total"), 5000.0);
    assert_eq!(
        common::metric(&metrics, "identify_dead_letters_total"),
        invalid.len() as f64
    );
    assert_eq!(
        common::metric(&metrics, "identify_records_produced_total"),
        (5000 - invalid.len()) as f64
    );
    assert_eq!(
        common::metric(&metrics, "identify_credits_spent_total"),
        matched.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_commits_what_was_published() {
    let sim = common::start_sim(|_| {}).await;
    let topics = Topics::create("stopcommit", 3).await;
    kafka::produce(&topics.input, 3, &common::emails(600, "stop")).await;
    let mut cfg = common::config(&topics, &sim.base_url());
    // No periodic commit during the run: only the stop can commit.
    cfg.kafka.commit_interval = Duration::from_secs(3600);
    let connector = Connector::start(cfg).await;
    kafka::wait_for("every output published", Duration::from_secs(120), || {
        kafka::end_offsets(&topics.output, 3).iter().sum::<i64>() == 600
    })
    .await;
    assert!(
        kafka::committed(&topics.group, &topics.input, 3)
            .iter()
            .all(|c| *c <= 0),
        "nothing committed before the stop"
    );
    connector.stop().await;
    assert_eq!(
        kafka::committed(&topics.group, &topics.input, 3),
        kafka::end_offsets(&topics.input, 3),
        "the stop commits every published record"
    );
}

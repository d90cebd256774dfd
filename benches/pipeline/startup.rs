//! Start-up: from the process start to its first published output, with
//! the connector's own breakdown (`identify_startup_seconds{phase}`: the
//! store open and restore, the producer, the consumer, the group joined,
//! the first output). Two cases: a restart on a warm local store with
//! static membership (three restarts, the median), and a new pod (an empty
//! disk) restoring a store topic of 100,000 results.

use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;

/// Events of known identifiers (`tag{i % known}`) to answer after a start.
async fn produce_known(run: &Run, tag: &str, known: usize, n: usize, from: usize) {
    let records: kafka::Records = (from..from + n)
        .map(|i| {
            (
                None,
                format!(
                    r#"{{"email":"{tag}{}@company{}.com","n":{i}}}"#,
                    i % known,
                    (i % known) % 997
                )
                .into_bytes(),
            )
        })
        .collect();
    kafka::produce(&run.input, run.partitions, &records).await;
}

/// Starts a connector and waits for its first output beyond `outputs`:
/// (seconds from the process start, the connector's breakdown).
async fn first_output(run: &Run, cfg: &std::path::Path, port: u16, outputs: i64) -> (f64, String) {
    let started = Instant::now();
    let conn = Connector::start(cfg, port);
    let secs = loop {
        let n: i64 = tokio::task::block_in_place(|| run.marks.end_offsets(&run.output, run.partitions).iter().sum());
        if n > outputs {
            break started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no output");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = conn_metrics(&conn).await;
    let mut phases = Vec::new();
    for p in ["store", "sink", "consumer", "joined", "first_output"] {
        let v = testkit::metrics::metric_with(&text, "identify_startup_seconds", &format!("phase=\"{p}\""));
        phases.push(format!("{p}={:.2}", v.unwrap_or(f64::NAN)));
    }
    let restore = conn.metric("identify_store_restore_seconds").await;
    phases.push(format!("restore={restore:.2}"));
    while !tokio::task::block_in_place(|| run.committed_all()) {
        assert!(started.elapsed() < Duration::from_secs(300), "not committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn.stop();
    (secs, phases.join(" "))
}

async fn conn_metrics(conn: &Connector) -> String {
    match reqwest::get(format!("http://127.0.0.1:{}/metrics", conn.port)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn outputs(run: &Run) -> i64 {
    run.marks.end_offsets(&run.output, run.partitions).iter().sum()
}

pub async fn run() {
    let sim = sim(|c| c.latency_scale = 0.0).await;

    // A restart on a warm store, static membership.
    let run = Run::new("startup-warm", 6).await;
    produce_known(&run, "warm", 1_000, 1_000, 0).await;
    let port = testkit::free_port();
    let cfg = run.config(&sim.base_url(), port, "");
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        cfg_text.replacen("[kafka]\n", "[kafka]\ninstance_id = \"startup-0\"\n", 1),
    )
    .unwrap();
    let conn = Connector::start(&cfg, port);
    drain(&run, &conn, Duration::from_secs(120)).await;
    conn.stop();
    let mut warm = Vec::new();
    for i in 0..3 {
        produce_known(&run, "warm", 1_000, 1_000, 1_000 * (i + 1)).await;
        let before = tokio::task::block_in_place(|| outputs(&run));
        let (secs, phases) = first_output(&run, &cfg, port, before).await;
        eprintln!("startup warm restart {i}: first output after {secs:.2} s ({phases})");
        warm.push((secs, phases));
    }
    warm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (warm_secs, warm_phases) = warm[1].clone();

    // A new pod restoring 100,000 results from the topic.
    let mut big = Run::new("startup-new", 6).await;
    big.api_extra = RAISED_BUDGET.into();
    produce_known(&big, "restore", 100_000, 100_000, 0).await;
    let port = testkit::free_port();
    let cfg = big.config(&sim.base_url(), port, "");
    let conn = Connector::start(&cfg, port);
    drain(&big, &conn, Duration::from_secs(600)).await;
    conn.stop();
    produce_known(&big, "restore", 100_000, 1_000, 100_000).await;
    let fresh = big.store_dir().with_extension("new-pod");
    let port = testkit::free_port();
    let group = Group {
        id: &big.group,
        output: &big.output,
        store_topic: &format!("{}.identify-cache", big.group),
    };
    let cfg = big.config_for(&sim.base_url(), port, "", &fresh, &group);
    let before = tokio::task::block_in_place(|| outputs(&big));
    let (new_secs, new_phases) = first_output(&big, &cfg, port, before).await;
    let _ = std::fs::remove_dir_all(&fresh);
    report(
        "startup",
        &[
            ("warm_restart_first_output_s", format!("{warm_secs:.2}")),
            ("warm_restart_phases", format!("\"{warm_phases}\"")),
            ("new_pod_100k_first_output_s", format!("{new_secs:.2}")),
            ("new_pod_phases", format!("\"{new_phases}\"")),
        ],
    );
}

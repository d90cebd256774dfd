//! Throughput and CPU with an instant API, and peak RSS with a large
//! backlog; after the large one, the store's restore: a new pod (empty
//! disk) reads the whole store topic, the same pod again only its tail.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// Bytes under `dir`.
fn disk_use(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Starts a connector over the store in `dir`, waits until its store is
/// restored; returns (restore seconds, peak RSS MiB while restoring,
/// results in the store).
async fn restore(run: &Run, base_url: &str, dir: &Path) -> (f64, f64, f64) {
    let port = testkit::free_port();
    let conn = Connector::start(&run.config_in(base_url, port, "", dir), port);
    let started = Instant::now();
    let secs = loop {
        let s = conn.metric("identify_store_restore_seconds").await;
        if s > 0.0 {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "store not restored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = conn.metric("identify_store_results").await;
    let (_, rss) = conn.usage();
    conn.stop();
    (secs, rss, results)
}

pub async fn run(name: &str, n: usize) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let mut run = Run::new(name, 6).await;
    // An instant API: the connector's own cost is what is measured, so the
    // API budget is raised out of the way (the report says so).
    run.api_extra = RAISED_BUDGET.into();
    produce_unique(&run, n, name).await;
    let port = testkit::free_port();
    let conn = Connector::start(
        &run.config(&sim.base_url(), port, "[batch]\nlinger = \"100ms\"\n"),
        port,
    );
    let (elapsed, _, _) = drain(&run, &conn, Duration::from_secs(900)).await;
    let (cpu, rss) = conn.usage();
    conn.stop();
    let stats = sim.stats();
    let mut fields = Vec::new();
    if name == "rss" {
        let fresh = run.store_dir().with_extension("new-pod");
        let (cold, cold_rss, results) = restore(&run, &sim.base_url(), &fresh).await;
        let (warm, warm_rss, _) = restore(&run, &sim.base_url(), &fresh).await;
        fields = vec![
            ("store_results", format!("{results:.0}")),
            ("restore_from_topic_s", format!("{cold:.2}")),
            ("restore_from_topic_peak_rss_mib", format!("{cold_rss:.1}")),
            ("restore_from_disk_s", format!("{warm:.2}")),
            ("restore_from_disk_peak_rss_mib", format!("{warm_rss:.1}")),
            (
                "store_disk_mib",
                format!("{:.1}", disk_use(&fresh) as f64 / (1 << 20) as f64),
            ),
        ];
    }
    report(
        name,
        &[
            ("records", n.to_string()),
            ("api_budget", "raised".to_string()),
            ("elapsed_s", format!("{:.2}", elapsed.as_secs_f64())),
            ("records_per_s", format!("{:.0}", n as f64 / elapsed.as_secs_f64())),
            ("cpu_s", format!("{cpu:.2}")),
            ("cpu_s_per_1000_records", format!("{:.4}", cpu * 1000.0 / n as f64)),
            ("peak_rss_mib", format!("{rss:.1}")),
            ("jobs", stats.submits_accepted.to_string()),
        ]
        .into_iter()
        .chain(fields)
        .collect::<Vec<_>>(),
    );
}

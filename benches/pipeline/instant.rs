//! Throughput and CPU with an instant API, and peak RSS with a large backlog.

use std::time::Duration;

use crate::common::*;

pub async fn run(name: &str, n: usize) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let run = Run::new(name, 6).await;
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
    report(
        name,
        &[
            ("records", n.to_string()),
            ("elapsed_s", format!("{:.2}", elapsed.as_secs_f64())),
            ("records_per_s", format!("{:.0}", n as f64 / elapsed.as_secs_f64())),
            ("cpu_s", format!("{cpu:.2}")),
            ("cpu_s_per_1000_records", format!("{:.4}", cpu * 1000.0 / n as f64)),
            ("peak_rss_mib", format!("{rss:.1}")),
            ("jobs", stats.submits_accepted.to_string()),
        ],
    );
}

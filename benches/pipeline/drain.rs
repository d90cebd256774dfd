//! Backlog drain against 2-second jobs: drain time over the API floor, slot
//! utilization, requests per job (polling or webhooks).

use std::time::Duration;

use crate::common::*;

pub async fn run(webhooks: bool) {
    let n = if webhooks { 15_000 } else { 30_000 };
    let name = if webhooks { "webhooks" } else { "drain" };
    let sim = sim(two_second_jobs).await;
    let run = Run::new(name, 6).await;
    produce_unique(&run, n, name).await;
    let port = testkit::free_port();
    let extra = if webhooks {
        format!("[webhook]\npublic_url = \"http://127.0.0.1:{port}\"\n")
    } else {
        String::new()
    };
    let conn = Connector::start(&run.config(&sim.base_url(), port, &extra), port);
    let (elapsed, mean_active, startup) = drain(&run, &conn, Duration::from_secs(600)).await;
    let busy = elapsed - startup;
    let (cpu, rss) = conn.usage();
    conn.stop();
    let stats = sim.stats();
    let jobs = stats.submits_accepted.max(1);
    let floor = (n as f64 / 300.0 / 5.0).ceil() * 2.0;
    report(
        name,
        &[
            ("records", n.to_string()),
            ("drain_s", format!("{:.2}", elapsed.as_secs_f64())),
            ("floor_s", format!("{floor:.0}")),
            ("drain_over_floor", format!("{:.3}", elapsed.as_secs_f64() / floor)),
            ("startup_s", format!("{:.2}", startup.as_secs_f64())),
            (
                "first_job_to_drained_over_floor",
                format!("{:.3}", busy.as_secs_f64() / floor),
            ),
            ("slot_utilization", format!("{:.3}", mean_active / 5.0)),
            ("jobs", jobs.to_string()),
            (
                "api_requests_per_job",
                format!("{:.2}", api_requests(&stats) as f64 / jobs as f64),
            ),
            (
                "status_polls_per_job",
                format!("{:.2}", stats.polls as f64 / jobs as f64),
            ),
            ("rate_limited_429", stats.rate_limited_429.to_string()),
            ("max_concurrent_jobs", stats.max_concurrent_active_jobs.to_string()),
            ("cpu_s", format!("{cpu:.2}")),
            ("peak_rss_mib", format!("{rss:.1}")),
        ],
    );
}

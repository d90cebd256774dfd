//! Credits re-spent after a SIGKILL with jobs in flight.

use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;

pub async fn run() {
    let sim = sim(|c| {
        two_second_jobs(c);
        c.base_time = Duration::from_secs(4);
    })
    .await;
    let run = Run::new("recovery", 6).await;
    let n = 6_000;
    produce_unique(&run, n, "recovery").await;
    let port = testkit::free_port();
    let cfg = run.config(&sim.base_url(), port, "");
    let conn = Connector::start(&cfg, port);
    let t0 = Instant::now();
    while sim.stats().submits_accepted < 5 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.proc.kill();
    let at_kill = sim.stats();
    let conn = Connector::start(&cfg, port);
    let (elapsed, _, _) = drain(&run, &conn, Duration::from_secs(300)).await;
    conn.stop();
    let stats = sim.stats();
    let audit_outputs: i64 = kafka::end_offsets(&run.output, run.partitions).iter().sum();
    report(
        "recovery",
        &[
            ("records", n.to_string()),
            (
                "jobs_in_flight_at_kill",
                (at_kill.submits_accepted - at_kill.jobs_completed - at_kill.jobs_failed).to_string(),
            ),
            ("jobs_total", stats.submits_accepted.to_string()),
            (
                "identifiers_resubmitted",
                stats.identifiers_submitted_more_than_once.to_string(),
            ),
            ("credits_charged", stats.credits_charged.to_string()),
            ("credits_respent", stats.credits_recharged.to_string()),
            ("outputs", audit_outputs.to_string()),
            ("restart_to_drained_s", format!("{:.1}", elapsed.as_secs_f64())),
        ],
    );
}

//! What exactly-once output costs: the same cache-hit stream and the same
//! backlog drain with `kafka.exactly_once` off and on, in one run. Both are
//! timed from the connector's start until the group has committed every
//! input offset (with exactly_once, outputs become visible at that commit;
//! output end offsets would also count transaction markers).

use std::time::{Duration, Instant};

use crate::cachehit::{produce_people, produce_stream};
use crate::common::*;

/// Seconds from `start` until every input offset of `run` is committed.
async fn until_committed(run: &Run, start: Instant, limit: Duration) -> f64 {
    while !run.committed_all() {
        assert!(start.elapsed() < limit, "{}: not committed within {limit:?}", run.group);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed().as_secs_f64()
}

/// 200,000 events over 1,000 people resolved before: records/s and CPU.
async fn cachehit(exactly_once: bool, events: usize) -> (f64, f64) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let mut run = Run::new("eos-cachehit", 6).await;
    if exactly_once {
        run.kafka_extra = "exactly_once = true".into();
    }
    produce_people(&run).await;
    let port = testkit::free_port();
    let cfg = run.config(&sim.base_url(), port, "[batch]\nlinger = \"100ms\"\n");
    let conn = Connector::start(&cfg, port);
    until_committed(&run, Instant::now(), Duration::from_secs(120)).await;
    conn.stop();
    produce_stream(&run, events).await;
    let start = Instant::now();
    let conn = Connector::start(&cfg, port);
    let secs = until_committed(&run, start, Duration::from_secs(300)).await;
    let cpu = conn.usage().0;
    conn.stop();
    (events as f64 / secs, cpu * 1e6 / events as f64)
}

/// 30,000 unique emails, 2-second jobs: seconds until all committed.
async fn drain(exactly_once: bool, records: usize) -> f64 {
    let sim = sim(two_second_jobs).await;
    let mut run = Run::new("eos-drain", 6).await;
    run.api_extra = RAISED_BUDGET.into();
    if exactly_once {
        run.kafka_extra = "exactly_once = true".into();
    }
    produce_unique(&run, records, "eos").await;
    let port = testkit::free_port();
    let start = Instant::now();
    let conn = Connector::start(&run.config(&sim.base_url(), port, ""), port);
    let secs = until_committed(&run, start, Duration::from_secs(300)).await;
    conn.stop();
    secs
}

pub async fn run() {
    let (hit_off, cpu_off) = cachehit(false, 200_000).await;
    let (hit_on, cpu_on) = cachehit(true, 200_000).await;
    let drain_off = drain(false, 30_000).await;
    let drain_on = drain(true, 30_000).await;
    report(
        "exactly_once",
        &[
            ("cachehit_records_per_s_off", format!("{hit_off:.0}")),
            ("cachehit_records_per_s_on", format!("{hit_on:.0}")),
            ("cachehit_on_over_off", format!("{:.2}", hit_on / hit_off)),
            ("cachehit_cpu_us_per_record_off", format!("{cpu_off:.2}")),
            ("cachehit_cpu_us_per_record_on", format!("{cpu_on:.2}")),
            ("drain_s_off", format!("{drain_off:.2}")),
            ("drain_s_on", format!("{drain_on:.2}")),
            ("drain_on_over_off", format!("{:.3}", drain_on / drain_off)),
        ],
    );
}

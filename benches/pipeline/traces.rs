//! What traces cost: the instant-API throughput run (100,000 unique emails,
//! every record carrying a sampled `traceparent`, so each gets a `record`
//! span beside the job spans: the worst case) with telemetry off, on (a
//! real Jaeger all-in-one receiving), and on with the collector down.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;

const RECORDS: usize = 100_000;

/// Jaeger's binary (`scripts/jaeger.sh path` builds it; bench.sh exports it).
fn jaeger_bin() -> PathBuf {
    std::env::var_os("JAEGER_BIN")
        .map(PathBuf::from)
        .expect("JAEGER_BIN (scripts/bench.sh sets it from scripts/jaeger.sh path)")
}

/// A child process killed when dropped (also when a run panics).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn produce_traced(run: &Run, tag: &str) {
    for start in (0..RECORDS).step_by(50_000) {
        let records: Vec<_> = (start..(start + 50_000).min(RECORDS))
            .map(|i| {
                let tp = format!("00-{:032x}-{:016x}-01", i as u128 + 1, i as u64 + 1).into_bytes();
                (
                    None,
                    format!(r#"{{"email":"{tag}{i}@company{}.com","n":{i}}}"#, i % 997).into_bytes(),
                    vec![("traceparent".to_string(), Some(tp))],
                )
            })
            .collect();
        kafka::produce_with_headers(&run.input, run.partitions, &records).await;
    }
}

/// One throughput run with `telemetry` appended to the config: records/s
/// and CPU µs per record.
async fn once(mode: &str, telemetry: &str) -> (f64, f64) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let mut run = Run::new(&format!("traces-{mode}"), 6).await;
    run.api_extra = RAISED_BUDGET.into();
    produce_traced(&run, mode).await;
    let port = testkit::free_port();
    let extra = format!("[batch]\nlinger = \"100ms\"\n{telemetry}");
    let started = Instant::now();
    let conn = Connector::start(&run.config(&sim.base_url(), port, &extra), port);
    drain(&run, &conn, Duration::from_secs(900)).await;
    let secs = started.elapsed().as_secs_f64();
    let (cpu, _) = conn.usage();
    let dropped = conn.metric("identify_spans_dropped_total").await;
    conn.stop();
    eprintln!("traces {mode}: {secs:.2} s, {dropped} spans dropped");
    (RECORDS as f64 / secs, cpu * 1e6 / RECORDS as f64)
}

pub async fn run() {
    let (off, off_cpu) = once("off", "").await;
    let jaeger = Killed(
        Command::new(jaeger_bin())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Jaeger"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (on, on_cpu) = once("on", "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n").await;
    drop(jaeger);
    let down = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\n",
        testkit::free_port()
    );
    let (dn, dn_cpu) = once("down", &down).await;
    report(
        "traces",
        &[
            ("records", RECORDS.to_string()),
            ("traced_records", RECORDS.to_string()),
            ("api_budget", "raised".to_string()),
            ("off_records_per_s", format!("{off:.0}")),
            ("on_records_per_s", format!("{on:.0}")),
            ("down_records_per_s", format!("{dn:.0}")),
            ("on_ratio", format!("{:.2}", on / off)),
            ("down_ratio", format!("{:.2}", dn / off)),
            ("off_cpu_us_per_record", format!("{off_cpu:.2}")),
            ("on_cpu_us_per_record", format!("{on_cpu:.2}")),
            ("down_cpu_us_per_record", format!("{dn_cpu:.2}")),
        ],
    );
}

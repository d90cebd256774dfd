//! The cache-hit path: a busy stream whose identifiers were all resolved
//! before (200,000 events over 1,000 people), next to a bare librdkafka
//! pipe (`kcat -C ... | kcat -P ...`) moving the same records through the
//! same broker in the same run: records/s and CPU per record of both.

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;
use crate::plot::{rate, Chart, Series};

const PEOPLE: usize = 1_000;

/// (seconds since the first output, outputs so far) until `total` outputs,
/// and the connector's CPU seconds from the first output to the last.
async fn follow(
    topic: &str,
    partitions: i32,
    from: i64,
    total: i64,
    mut cpu: impl FnMut() -> f64,
) -> (Vec<(f64, f64)>, f64) {
    let started = Instant::now();
    let marks = kafka::Watermarks::new();
    let mut samples = Vec::new();
    let mut first: Option<(Instant, f64)> = None;
    loop {
        let n: i64 = tokio::task::block_in_place(|| marks.end_offsets(topic, partitions).iter().sum::<i64>()) - from;
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), cpu()));
        }
        if let Some((t, _)) = first {
            samples.push((t.elapsed().as_secs_f64(), n as f64));
        }
        if n >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "{topic}: {n} of {total}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let used = first.map_or(0.0, |(_, c)| cpu() - c);
    (samples, used)
}

fn person(i: usize) -> String {
    format!("person{i}@company{}.com", i % 97)
}

/// One event for each of the 1,000 people (to resolve them).
pub async fn produce_people(run: &Run) {
    let warm: kafka::Records = (0..PEOPLE)
        .map(|i| (None, format!(r#"{{"email":"{}"}}"#, person(i)).into_bytes()))
        .collect();
    kafka::produce(&run.input, run.partitions, &warm).await;
}

/// The busy stream: `events` events, every identifier known.
pub async fn produce_stream(run: &Run, events: usize) {
    let stream: kafka::Records = (0..events)
        .map(|i| {
            let e = person(i % PEOPLE);
            (
                None,
                format!(r#"{{"email":"{e}","event":"page_view","n":{i}}}"#).into_bytes(),
            )
        })
        .collect();
    kafka::produce(&run.input, run.partitions, &stream).await;
    eprintln!("produced {events} events over {PEOPLE} people");
}

fn throughput(samples: &[(f64, f64)]) -> f64 {
    let (t, n) = samples.last().copied().unwrap_or((0.0, 0.0));
    // The first sample is up to one sampling period after the first record.
    n / (t + 0.05).max(1e-3)
}

pub async fn run(events: usize) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let run = Run::new("cachehit", 6).await;
    let port = testkit::free_port();
    let cfg = run.config(&sim.base_url(), port, "[batch]\nlinger = \"100ms\"\n");
    // Resolve the people once.
    produce_people(&run).await;
    let conn = Connector::start(&cfg, port);
    drain(&run, &conn, Duration::from_secs(300)).await;
    conn.stop();
    let jobs_before = sim.stats().submits_accepted;
    produce_stream(&run, events).await;

    let conn = Connector::start(&cfg, port);
    let (samples, cpu) = follow(&run.output, run.partitions, PEOPLE as i64, events as i64, || {
        conn.usage().0
    })
    .await;
    let rss = conn.usage().1;
    let saved = conn.metric("identify_credits_saved_total").await;
    conn.stop();
    let connector_rate = throughput(&samples);
    let jobs = sim.stats().submits_accepted - jobs_before;

    // The same records through a bare librdkafka pipe.
    let piped = kafka::unique("bench-cachehit-kcat");
    kafka::create_topics(&[(&piped, run.partitions)]).await;
    let total = (PEOPLE + events) as i64;
    let b = kafka::bootstrap();
    let script = format!(
        "TIMEFORMAT='%U %S'; time (kcat -C -b {b} -t {} -o beginning -e -q | kcat -P -b {b} -t {piped})",
        run.input
    );
    let pipe = std::thread::spawn(move || Command::new("bash").arg("-c").arg(script).output());
    let (kcat_samples, _) = follow(&piped, run.partitions, 0, total, || 0.0).await;
    let out = pipe.join().unwrap().expect("kcat (apt-get install kcat)");
    assert!(out.status.success(), "kcat: {}", String::from_utf8_lossy(&out.stderr));
    let times = String::from_utf8_lossy(&out.stderr);
    let kcat_cpu: f64 = times
        .split_whitespace()
        .rev()
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    let kcat_rate = throughput(&kcat_samples);
    report(
        "cachehit",
        &[
            ("events", events.to_string()),
            ("people", PEOPLE.to_string()),
            ("records_per_s", format!("{connector_rate:.0}")),
            ("kcat_records_per_s", format!("{kcat_rate:.0}")),
            ("ratio_to_kcat", format!("{:.2}", connector_rate / kcat_rate)),
            ("cpu_us_per_record", format!("{:.2}", cpu * 1e6 / events as f64)),
            (
                "kcat_cpu_us_per_record",
                format!("{:.2}", kcat_cpu * 1e6 / total as f64),
            ),
            ("jobs", jobs.to_string()),
            ("credits_saved", format!("{saved:.0}")),
            ("peak_rss_mib", format!("{rss:.1}")),
        ],
    );
    Chart {
        title: "cachehit: records/s, 200,000 events over 1,000 known people",
        x_label: "seconds since the first output",
        y_label: "records/s",
        series: vec![
            Series {
                label: "connector".into(),
                points: rate(&samples),
            },
            Series {
                label: "kcat pipe".into(),
                points: rate(&kcat_samples),
            },
        ],
        reference: None,
    }
    .write("cachehit");
}

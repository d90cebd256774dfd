//! The cache-hit path: a busy stream whose identifiers were all resolved
//! before (1,000,000 events over 1,000 people), next to a bare librdkafka
//! pipe (`kcat -C ... | kcat -P ...`) moving the same records through the
//! same broker, in interleaved pairs (connector, pipe, connector, pipe,
//! ...): each timed from its process start to its last record, and in
//! its steady state (from its first output); the median ratio of the pairs
//! is reported, with CPU per record of both. Each connector run is a new
//! consumer group over a warm store (the store topic and directory the
//! warm-up filled), on the shipped configuration.

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::kafka;

use crate::common::*;
use crate::plot::{rate, Chart, Series};

const PEOPLE: usize = 1_000;

/// One process's progress: (seconds since its start, records so far)
/// samples from its first record, and when it finished.
struct Progress {
    samples: Vec<(f64, f64)>,
    first: f64,
    done: f64,
}

impl Progress {
    /// Records per second from the process start.
    fn since_start(&self, total: f64) -> f64 {
        total / self.done.max(1e-3)
    }

    /// Records per second from the first record on.
    fn steady(&self, total: f64) -> f64 {
        let first_n = self.samples.first().map_or(0.0, |s| s.1);
        (total - first_n) / (self.done - self.first).max(1e-3)
    }
}

/// Follows `topic` from `started` until it holds `total` records more than `from`.
async fn follow(topic: &str, partitions: i32, from: i64, total: i64, started: Instant) -> Progress {
    let marks = kafka::Watermarks::new();
    let mut samples = Vec::new();
    loop {
        let n: i64 = tokio::task::block_in_place(|| marks.end_offsets(topic, partitions).iter().sum::<i64>()) - from;
        let t = started.elapsed().as_secs_f64();
        if n > 0 {
            samples.push((t, n as f64));
        }
        if n >= total {
            let first = samples.first().map_or(t, |s| s.0);
            return Progress {
                samples,
                first,
                done: t,
            };
        }
        assert!(started.elapsed() < Duration::from_secs(900), "{topic}: {n} of {total}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
    let chunk = 200_000;
    for start in (0..events).step_by(chunk) {
        let stream: kafka::Records = (start..(start + chunk).min(events))
            .map(|i| {
                let e = person(i % PEOPLE);
                (
                    None,
                    format!(r#"{{"email":"{e}","event":"page_view","n":{i}}}"#).into_bytes(),
                )
            })
            .collect();
        kafka::produce(&run.input, run.partitions, &stream).await;
    }
    eprintln!("produced {events} events over {PEOPLE} people");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The connector over the warm store, as consumer group `n` of the run.
async fn connector_pass(run: &Run, base_url: &str, store_topic: &str, n: usize, total: i64) -> (Progress, f64, f64) {
    let id = format!("{}-pass{n}", run.group);
    let output = kafka::unique("bench-cachehit-out");
    kafka::create_topics(&[(&output, run.partitions)]).await;
    let port = testkit::free_port();
    let group = Group {
        id: &id,
        output: &output,
        store_topic,
    };
    let cfg = run.config_for(base_url, port, "", &run.store_dir(), &group);
    let started = Instant::now();
    let conn = Connector::start(&cfg, port);
    let progress = follow(&output, run.partitions, 0, total, started).await;
    let (cpu, rss) = conn.usage();
    conn.stop();
    (progress, cpu, rss)
}

/// The same records through `kcat -C | kcat -P`; (progress, CPU seconds).
async fn kcat_pass(run: &Run, total: i64) -> (Progress, f64) {
    let piped = kafka::unique("bench-cachehit-kcat");
    kafka::create_topics(&[(&piped, run.partitions)]).await;
    let b = kafka::bootstrap();
    let script = format!(
        "TIMEFORMAT='%U %S'; time (kcat -C -b {b} -t {} -o beginning -e -q | kcat -P -b {b} -t {piped})",
        run.input
    );
    let started = Instant::now();
    let pipe = std::thread::spawn(move || Command::new("bash").arg("-c").arg(script).output());
    let progress = follow(&piped, run.partitions, 0, total, started).await;
    let out = pipe.join().unwrap().expect("kcat (apt-get install kcat)");
    assert!(out.status.success(), "kcat: {}", String::from_utf8_lossy(&out.stderr));
    let times = String::from_utf8_lossy(&out.stderr);
    let cpu: f64 = times
        .split_whitespace()
        .rev()
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    (progress, cpu)
}

pub async fn run(events: usize, pairs: usize) {
    let sim = sim(|c| c.latency_scale = 0.0).await;
    let run = Run::new("cachehit", 6).await;
    let port = testkit::free_port();
    let cfg = run.config(&sim.base_url(), port, "");
    // Resolve the people once (the store topic and directory stay warm).
    produce_people(&run).await;
    let conn = Connector::start(&cfg, port);
    drain(&run, &conn, Duration::from_secs(300)).await;
    conn.stop();
    let jobs_before = sim.stats().submits_accepted;
    produce_stream(&run, events).await;
    let store_topic = format!("{}.identify-cache", run.group);
    let total = (PEOPLE + events) as i64;
    let (mut start_ratio, mut steady_ratio) = (Vec::new(), Vec::new());
    let mut lines = Vec::new();
    let mut last = None;
    for n in 0..pairs {
        let (conn, cpu, rss) = connector_pass(&run, &sim.base_url(), &store_topic, n, total).await;
        let (pipe, kcat_cpu) = kcat_pass(&run, total).await;
        let t = total as f64;
        start_ratio.push(conn.since_start(t) / pipe.since_start(t));
        steady_ratio.push(conn.steady(t) / pipe.steady(t));
        lines.push(format!(
            "pair {n}: connector {:.0}/s from start ({:.0}/s steady, first output at {:.2} s, {:.2} us CPU per record, {rss:.0} MiB), kcat {:.0}/s ({:.0}/s steady, {:.2} us per record)",
            conn.since_start(t),
            conn.steady(t),
            conn.first,
            cpu * 1e6 / t,
            pipe.since_start(t),
            pipe.steady(t),
            kcat_cpu * 1e6 / t,
        ));
        last = Some((conn, pipe, cpu, kcat_cpu, rss));
    }
    for l in &lines {
        eprintln!("cachehit {l}");
    }
    let (conn, pipe, cpu, kcat_cpu, rss) = last.expect("a pair");
    let jobs = sim.stats().submits_accepted - jobs_before;
    let t = total as f64;
    report(
        "cachehit",
        &[
            ("events", events.to_string()),
            ("people", PEOPLE.to_string()),
            ("pairs", pairs.to_string()),
            ("ratio_to_kcat_from_start_median", format!("{:.2}", median(start_ratio))),
            ("ratio_to_kcat_steady_median", format!("{:.2}", median(steady_ratio))),
            ("records_per_s_from_start", format!("{:.0}", conn.since_start(t))),
            ("records_per_s_steady", format!("{:.0}", conn.steady(t))),
            ("first_output_s", format!("{:.2}", conn.first)),
            ("kcat_records_per_s_from_start", format!("{:.0}", pipe.since_start(t))),
            ("kcat_records_per_s_steady", format!("{:.0}", pipe.steady(t))),
            ("cpu_us_per_record", format!("{:.2}", cpu * 1e6 / t)),
            ("kcat_cpu_us_per_record", format!("{:.2}", kcat_cpu * 1e6 / t)),
            ("jobs", jobs.to_string()),
            ("peak_rss_mib", format!("{rss:.1}")),
        ],
    );
    Chart {
        title: "cachehit: records/s from process start, 1,000,000 events over 1,000 known people",
        x_label: "seconds since the process started",
        y_label: "records/s",
        series: vec![
            Series {
                label: "connector".into(),
                points: rate(&conn.samples),
            },
            Series {
                label: "kcat pipe".into(),
                points: rate(&pipe.samples),
            },
        ],
        reference: None,
    }
    .write("cachehit");
}

//! The soak: the connector (the release binary's code, as a child process)
//! against the three-broker cluster for `SOAK_MINUTES` (default 30) at
//! about half the API's capacity (8 s jobs: 5 slots x 300 identifiers per
//! ~8.3 s is ~180 identifiers/s; 90 records/s are produced, a fifth of
//! them repeats), with a fault at random moments (seed printed; set
//! `SOAK_SEED` to replay): a partition leader SIGKILLed and restarted, the
//! broker links slowed, the API link slowed or resetting, the connector
//! cut off from the brokers for a few seconds.
//!
//! Every minute it samples the process's RSS, open file descriptors and
//! threads, and the journal's size (`identify_journal_jobs`). Warm-up ends
//! when the in-memory bounds are reached: the hot set full and the journal
//! holding its 15 minutes of closed jobs (16 minutes in; half the run when
//! it is shorter). Each figure must end within 10% of where it was then,
//! both taken as the median of three samples (the first three after
//! warm-up, the last three), and no fault starts in the last 3 minutes: a
//! cut-off opens broker connections and their threads for a few minutes,
//! which is not where the figure sits.
//! Nothing may be lost or charged twice. Run by `scripts/chaos.sh all`.

mod common;

use std::time::{Duration, Instant};

use common::{kafka, Topics};
use rand::{Rng, SeedableRng};
use testkit::cluster::{Cluster, BROKERS, TOXIPROXY_API};
use testkit::metrics::scrape_with;
use testkit::toxiproxy::{self, Proxy};

/// Records produced per second.
const RATE: usize = 90;
/// No fault starts this close to the end.
const COOL_DOWN: Duration = Duration::from_secs(180);

/// One sample of the process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    minute: f64,
    rss_mib: f64,
    fds: f64,
    threads: f64,
    journal: f64,
}

fn proc_sample(pid: u32, minute: f64, journal: f64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map_or(0, |d| d.count()) as f64;
    Sample {
        minute,
        rss_mib: rss_kib / 1024.0,
        fds: count("fd"),
        threads: count("task"),
        journal,
    }
}

/// Each figure's median over `samples` (one to three of them).
fn median3(samples: &[Sample]) -> Sample {
    let median = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Sample {
        minute: median(|s| s.minute),
        rss_mib: median(|s| s.rss_mib),
        fds: median(|s| s.fds),
        threads: median(|s| s.threads),
        journal: median(|s| s.journal),
    }
}

/// The faults, one at a time.
async fn fault(n: u32, cluster: &Cluster, api: &Proxy, topics: &Topics) -> String {
    match n {
        0 => {
            let p = rand::random::<u32>() as usize % topics.partitions as usize;
            let leader = cluster.leader(&topics.input, p).await;
            cluster.kill(leader);
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.start(leader).await;
            format!(
                "leader of {}/{p} (broker {leader}) SIGKILLed, restarted after 5 s",
                topics.input
            )
        }
        1 => {
            for b in BROKERS {
                let attrs = serde_json::json!({ "latency": 300 });
                cluster
                    .proxy(b)
                    .toxic("slow", "latency", "downstream", 1.0, attrs)
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            for b in BROKERS {
                cluster.proxy(b).clear().await;
            }
            "broker links +300 ms for 20 s".into()
        }
        2 => {
            api.toxic(
                "slow",
                "latency",
                "downstream",
                1.0,
                serde_json::json!({ "latency": 2000 }),
            )
            .await;
            tokio::time::sleep(Duration::from_secs(20)).await;
            api.clear().await;
            "API link +2 s for 20 s".into()
        }
        3 => {
            api.resets(15).await;
            "API link resetting 20% of the time for 15 s".into()
        }
        _ => {
            for b in BROKERS {
                cluster.proxy(b).set_enabled(false).await;
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
            for b in BROKERS {
                cluster.proxy(b).set_enabled(true).await;
            }
            "connector cut off from every broker for 4 s".into()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scripts/chaos.sh all: 30 minutes"]
async fn cluster_soak_under_random_faults_keeps_memory_fds_threads_and_journal_flat() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30.0);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("soak: {minutes} minutes, seed {seed} (SOAK_SEED={seed} replays the faults' order and moments)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let warmup = if minutes >= 30.0 { 16.0 } else { minutes / 2.0 };

    let cluster = Cluster::ensure().await;
    let sim = common::start_sim(|c| c.base_time = Duration::from_secs(8)).await;
    let api = toxiproxy::create(TOXIPROXY_API, &kafka::unique("soak-api"), &sim.addr().to_string()).await;
    let topics = Topics::create("soak", 6).await;
    let port = testkit::proc::free_port();
    let toml = common::toml_for(&topics, &format!("http://{}", api.listen))
        .replace(
            &format!("brokers = \"{}\"", cluster.bootstrap),
            &format!("brokers = \"{}\"", cluster.proxied),
        )
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    assert!(
        toml.contains(&cluster.proxied),
        "the connector goes through the proxies"
    );
    let dir = common::cache_dir(&topics);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("soak.toml");
    std::fs::write(&cfg, toml).unwrap();
    let log = dir.join("soak.log");
    let proc = common::connector_proc(&cfg, &log, "warn", &[]);
    let pid = proc.id();
    let addr = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);
    let mut produced = 0usize;
    let mut next_sample = started + Duration::from_secs(60);
    let mut next_fault = started + Duration::from_secs(rng.random_range(60..120));
    let mut samples: Vec<Sample> = Vec::new();
    let mut faults = 0;
    while Instant::now() < end {
        let second = Instant::now();
        let batch: kafka::Records = (0..RATE)
            .map(|i| {
                let n = produced + i;
                // A fifth are repeats of earlier identifiers (cache hits).
                let id = if n % 5 == 4 && n > 1000 {
                    rng.random_range(0..n)
                } else {
                    n
                };
                (None, common::event(&format!("soak{id}@example{}.com", id % 97)))
            })
            .collect();
        kafka::produce(&topics.input, topics.partitions, &batch).await;
        produced += RATE;
        if Instant::now() >= next_fault && Instant::now() + COOL_DOWN < end {
            let kind = rng.random_range(0..5u32);
            let at = started.elapsed().as_secs_f64() / 60.0;
            let what = fault(kind, &cluster, &api, &topics).await;
            faults += 1;
            println!("soak: {at:.1} min: {what}");
            next_fault = Instant::now() + Duration::from_secs(rng.random_range(60..150));
        }
        if Instant::now() >= next_sample {
            let journal = scrape_with(&http, &addr, "identify_journal_jobs").await;
            let s = proc_sample(pid, started.elapsed().as_secs_f64() / 60.0, journal);
            let committed: i64 = kafka::committed(&topics.group, &topics.input, topics.partitions)
                .iter()
                .map(|c| (*c).max(0))
                .sum();
            println!(
                "SOAK t={:.1}m rss_mib={:.1} fds={} threads={} journal={} produced={produced} lag={}",
                s.minute,
                s.rss_mib,
                s.fds,
                s.threads,
                s.journal,
                produced as i64 - committed
            );
            samples.push(s);
            next_sample += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(second.elapsed())).await;
    }
    let last = median3(&samples[samples.len().saturating_sub(3)..]);
    common::wait_done(&topics, Duration::from_secs(600)).await;
    let status = proc.terminate(Duration::from_secs(60));
    assert!(status.success(), "the connector stops cleanly: {status:?}");
    let stats = sim.stats();
    api.delete().await;

    let first_warm = samples
        .iter()
        .position(|s| s.minute >= warmup)
        .expect("a sample after warm-up");
    let warm = median3(&samples[first_warm..(first_warm + 3).min(samples.len())]);
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    println!("soak figures (start = first sample, warm = median of 3 from {warmup} min, end = median of the last 3 under load, max = any sample):");
    for (name, f) in [
        ("rss_mib", (|s: &Sample| s.rss_mib) as fn(&Sample) -> f64),
        ("fds", |s: &Sample| s.fds),
        ("threads", |s: &Sample| s.threads),
        ("journal", |s: &Sample| s.journal),
    ] {
        println!(
            "SOAK {name}: start={:.1} warm={:.1} end={:.1} max={:.1}",
            f(&samples[0]),
            f(&warm),
            f(&last),
            max(f)
        );
    }
    let audit = common::audit(&topics);
    println!("{}", audit.result_line("soak", 0.0));
    println!(
        "soak: produced={produced} faults={faults} credits_charged={} credits_recharged={}",
        stats.credits_charged, stats.credits_recharged
    );
    audit.assert_nothing_lost("soak");
    assert_eq!(stats.credits_recharged, 0, "no credit charged twice");
    let mut compared = vec![
        ("RSS", warm.rss_mib, last.rss_mib),
        ("open fds", warm.fds, last.fds),
        ("threads", warm.threads, last.threads),
    ];
    if warmup >= 16.0 {
        compared.push(("journal", warm.journal, last.journal));
    } else {
        println!("soak: the journal is not compared: the run is shorter than its 15-minute bound");
    }
    for (name, w, e) in compared {
        let bound = (w * 0.1).max(1.0);
        assert!(
            (e - w).abs() <= bound,
            "{name} moved from {w:.1} after warm-up to {e:.1} at the end (more than 10%)"
        );
    }
}

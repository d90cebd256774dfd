//! Backlog drains on the shipped configuration against a simulator that
//! answers like a remote API (5-50 ms per request) and counts the key's
//! request budget as the connector's (`api.requests_per_minute`, 600 by
//! default, for all the pods on the key): slot utilization (the API's busy
//! slot-seconds over 5 x the drain time) beside the zero-gap ceiling (the
//! same jobs, in the same order, each on the slot that frees first), drain
//! time over the floor, requests and 429s per job; one pod or several
//! sharing the key; fixed 2-second jobs, 30% jitter with a pending phase,
//! or the realistic model (jobs as long as their slowest identifier, a
//! minute's median retrieval scaled to 1/20, with the budget scaled up
//! alike); polling or webhooks. Each run plots active jobs over time: per
//! pod, and as the API saw them.

use std::time::{Duration, Instant};

use crustdata_sim::SimConfig;
use testkit::kafka;

use crate::common::*;
use crate::plot::{active_at, slot_gaps, Chart, Series};

/// How long jobs take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// 2 s each.
    Fixed,
    /// 2 s ± 30% and a 0.5 s pending phase.
    Jitter,
    /// The simulator's realistic model at 1/20 time scale: known
    /// identifiers in 0.1 s, each unknown one (1 %) a log-normal retrieval
    /// of median 3 s; a job lasts as long as its slowest identifier.
    Realistic,
}

/// One drain scenario.
pub struct Drain {
    pub name: &'static str,
    pub records: usize,
    pub pods: usize,
    pub webhooks: bool,
    pub jobs: Jobs,
    /// `api.requests_per_minute`; `None`: the default (600), or 12,000
    /// with realistic jobs (the default's requests per job-second at 1/20
    /// time scale).
    pub rpm: Option<u32>,
    /// Records keyed over 500 keys, `output.key = "input"` and
    /// `output.ordering = "key"` (what per-key order costs the drain).
    pub ordered: bool,
}

impl Drain {
    /// The key's request budget in this run.
    fn budget(&self) -> u32 {
        self.rpm
            .unwrap_or(if self.jobs == Jobs::Realistic { 12_000 } else { 600 })
    }
}

fn remote_api(c: &mut SimConfig, d: &Drain) {
    two_second_jobs(c);
    c.request_latency_min = Duration::from_millis(5);
    c.request_latency_max = Duration::from_millis(50);
    // The API counts the key's requests per endpoint family, as the
    // connector's budget counts all of them: it never answers 429 for
    // the request rate unless the connector overspends.
    c.requests_per_minute = d.budget();
    match d.jobs {
        Jobs::Fixed => {}
        Jobs::Jitter => {
            c.base_time = Duration::from_millis(1400);
            c.jitter = Duration::from_millis(1200);
            c.pending_time = Duration::from_millis(500);
        }
        Jobs::Realistic => {
            c.job_time_model = crustdata_sim::JobTimeModel::Realistic;
            c.latency_scale = 0.05;
            c.unknown_rate = 0.01;
            c.retrieval_median = Duration::from_secs(60);
            c.retrieval_sigma = 1.0;
            c.jitter = Duration::from_millis(200);
            c.pending_time = Duration::from_secs(2);
        }
    }
}

pub async fn run(d: Drain) {
    let sim = sim(|c| remote_api(c, &d)).await;
    let mut run = Run::new(d.name, 6).await;
    if d.rpm.is_some() || d.jobs == Jobs::Realistic {
        run.api_extra = format!("requests_per_minute = {}", d.budget());
    }
    let output = if d.ordered {
        "[output]\nkey = \"input\"\nordering = \"key\"\n"
    } else {
        ""
    };
    let keys = if d.ordered { 500 } else { 0 };
    if d.pods == 1 {
        produce_keyed(&run, d.records, d.name, keys).await;
    }
    let t0 = Instant::now();
    let t0_ms = chrono::Utc::now().timestamp_millis();
    let pods: Vec<Connector> = (0..d.pods)
        .map(|i| {
            let port = testkit::free_port();
            let mut extra = if d.webhooks {
                format!("[webhook]\npublic_url = \"http://127.0.0.1:{port}\"\n")
            } else {
                String::new()
            };
            extra.push_str(output);
            let store = run.store_dir().join(format!("pod{i}"));
            Connector::start(&run.config_in(&sim.base_url(), port, &extra, &store), port)
        })
        .collect();
    if d.pods > 1 {
        // Pods that share a key, not a group still forming: the backlog
        // arrives once every pod has its partitions and knows the others.
        settle(&run, &pods).await;
        produce_keyed(&run, d.records, d.name, keys).await;
    }
    let samples = sample_until_drained(&run, &pods, t0, Duration::from_secs(600)).await;
    let observed = t0.elapsed().as_secs_f64();
    // The drain ends when the last output was produced (its timestamp), not
    // when this loop happened to see it.
    let last_output_ms = tokio::task::block_in_place(|| kafka::read_all(&run.output, run.partitions))
        .iter()
        .filter_map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(t0_ms);
    let drained = ((last_output_ms - t0_ms) as f64 / 1000.0).min(observed);
    let usage: Vec<(f64, f64)> = pods.iter().map(Connector::usage).collect();
    for p in pods {
        p.stop();
    }
    let stats = sim.stats();
    let intervals = sim.job_intervals(t0);
    let first_submit = intervals.iter().map(|i| i.0).fold(f64::INFINITY, f64::min);
    let window = drained - first_submit;
    let last_end = intervals.iter().map(|i| i.0 + i.1).fold(0.0, f64::max);
    let jobs = stats.submits_accepted.max(1);
    let ideal_jobs = d.records.div_ceil(300) as f64;
    let mean_job = stats.busy_slot_seconds / jobs as f64;
    let floor = (ideal_jobs / 5.0).ceil() * mean_job;
    let utilization = stats.busy_slot_seconds / (5.0 * window);
    let gaps = slot_gaps(&intervals, 5);
    let gap = |q: f64| {
        gaps.get(((gaps.len().max(1) - 1) as f64 * q) as usize)
            .map_or(0.0, |g| g * 1000.0)
    };
    let mean_gap = gaps.iter().sum::<f64>() * 1000.0 / gaps.len().max(1) as f64;
    let ceiling = zero_gap_utilization(&intervals, 5);
    let cpu: f64 = usage.iter().map(|u| u.0).sum();
    let rss = usage.iter().map(|u| u.1).fold(0.0, f64::max);
    report(
        d.name,
        &[
            ("records", d.records.to_string()),
            ("pods", d.pods.to_string()),
            ("ordering", if d.ordered { "key" } else { "none" }.to_string()),
            ("requests_per_minute", d.budget().to_string()),
            ("slot_utilization", format!("{utilization:.3}")),
            ("zero_gap_utilization", format!("{ceiling:.3}")),
            (
                "of_the_ceiling",
                format!("{:.3}", utilization / ceiling.max(f64::MIN_POSITIVE)),
            ),
            ("drain_s", format!("{window:.2}")),
            ("floor_s", format!("{floor:.2}")),
            ("drain_over_floor", format!("{:.3}", window / floor)),
            ("startup_s", format!("{first_submit:.2}")),
            ("last_job_end_to_last_output_s", format!("{:.2}", drained - last_end)),
            ("last_output_to_seen_s", format!("{:.2}", observed - drained)),
            ("jobs", jobs.to_string()),
            ("mean_job_s", format!("{mean_job:.3}")),
            (
                "api_requests_per_job",
                format!("{:.2}", api_requests(&stats) as f64 / jobs as f64),
            ),
            (
                "status_polls_per_job",
                format!("{:.2}", stats.polls as f64 / jobs as f64),
            ),
            (
                "rate_limited_429_per_job",
                format!("{:.3}", stats.rate_limited_429 as f64 / jobs as f64),
            ),
            (
                "active_job_429_per_job",
                format!("{:.3}", stats.rate_limited_active_jobs as f64 / jobs as f64),
            ),
            ("request_rate_429", stats.rate_limited_rpm.to_string()),
            ("max_active_jobs_per_key", stats.max_active_jobs_per_key.to_string()),
            ("idle_slot_gap_mean_ms", format!("{mean_gap:.0}")),
            ("idle_slot_gap_p50_ms", format!("{:.0}", gap(0.5))),
            ("idle_slot_gap_p95_ms", format!("{:.0}", gap(0.95))),
            ("cpu_s", format!("{cpu:.2}")),
            ("peak_rss_mib", format!("{rss:.1}")),
        ],
    );
    plot(&d, &samples, &intervals, first_submit, drained);
}

/// The slot utilization the same jobs would give if every slot took the
/// next job the instant it freed: the jobs' durations, in submit order,
/// each on the slot that frees first. What is left below it is the idle
/// gaps; what is left below 1 is the last jobs' spread.
fn zero_gap_utilization(intervals: &[(f64, f64)], slots: usize) -> f64 {
    let mut free = vec![0.0f64; slots];
    let mut ordered = intervals.to_vec();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, d) in &ordered {
        let first = free.iter_mut().min_by(|a, b| a.total_cmp(b)).expect("a slot");
        *first += d;
    }
    let end = free.iter().copied().fold(0.0, f64::max);
    ordered.iter().map(|i| i.1).sum::<f64>() / (slots as f64 * end.max(f64::MIN_POSITIVE))
}

/// Waits until every pod has partitions, all of them are assigned, and
/// every pod hears of the others.
async fn settle(run: &Run, pods: &[Connector]) {
    let started = Instant::now();
    loop {
        let mut assigned = Vec::new();
        let mut members = Vec::new();
        for p in pods {
            assigned.push(p.metric("identify_assigned_partitions").await as i32);
            members.push(p.metric("identify_team_members").await as usize);
        }
        if assigned.iter().all(|a| *a > 0)
            && assigned.iter().sum::<i32>() == run.partitions
            && members.iter().all(|m| *m == pods.len())
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "group not settled: {assigned:?} {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per-pod (seconds since `t0`, active jobs) samples, every 20 ms, until
/// every input has its output, then until the offsets are committed.
async fn sample_until_drained(run: &Run, pods: &[Connector], t0: Instant, limit: Duration) -> Vec<Vec<(f64, f64)>> {
    let mut samples = vec![Vec::new(); pods.len()];
    loop {
        for (pod, series) in pods.iter().zip(&mut samples) {
            let active = pod.metric("identify_active_jobs").await;
            series.push((t0.elapsed().as_secs_f64(), active));
        }
        if tokio::task::block_in_place(|| run.published_all()) {
            break;
        }
        assert!(t0.elapsed() < limit, "not drained within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !tokio::task::block_in_place(|| run.committed_all()) {
        assert!(t0.elapsed() < limit, "offsets not committed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

fn plot(d: &Drain, samples: &[Vec<(f64, f64)>], intervals: &[(f64, f64)], from: f64, to: f64) {
    let shift = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .filter(|(t, _)| *t >= from - 0.5 && *t <= to)
            .map(|(t, v)| (t - from, *v))
            .collect()
    };
    let times: Vec<f64> = (0..)
        .map(|i| from + f64::from(i) * 0.02)
        .take_while(|t| *t <= to)
        .collect();
    let mut series = vec![Series {
        label: "API: active jobs".into(),
        points: shift(&active_at(intervals, &times)),
    }];
    for (i, s) in samples.iter().enumerate() {
        series.push(Series {
            label: if d.pods == 1 {
                "connector: holding".into()
            } else {
                format!("pod {i}: holding")
            },
            points: shift(s),
        });
    }
    let title = format!(
        "{}: active jobs over time ({} pod{}, {}{})",
        d.name,
        d.pods,
        if d.pods == 1 { "" } else { "s" },
        match d.jobs {
            Jobs::Fixed => "2 s jobs",
            Jobs::Jitter => "2 s ± 30% jobs",
            Jobs::Realistic => "realistic jobs at 1/20 time",
        },
        if d.webhooks { ", webhooks" } else { ", polling" },
    );
    Chart {
        title: &title,
        x_label: "seconds since the first submit",
        y_label: "active jobs",
        series,
        reference: Some(("the key's limit", 5.0)),
    }
    .write(d.name);
}

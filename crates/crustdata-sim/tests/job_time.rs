//! Simulator job-time models: the realistic model (known identifiers take
//! `base_time`, unknown ones a log-normal retrieval time, the job as long as
//! its slowest identifier), observed through `SimHandle::job_intervals`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crustdata_sim::{needs_retrieval, JobTimeModel, SimConfig};
use serde_json::json;

/// Realistic jobs scaled by `scale`, no jitter and no per-identifier time,
/// without the active-job limit getting in the way.
fn realistic(unknown_rate: f64, scale: f64) -> SimConfig {
    SimConfig {
        job_time_model: JobTimeModel::Realistic,
        unknown_rate,
        base_time: Duration::from_secs(2),
        per_identifier_time: Duration::ZERO,
        jitter: Duration::ZERO,
        retrieval_median: Duration::from_secs(60),
        retrieval_sigma: 1.0,
        latency_scale: scale,
        max_active_jobs: 1000,
        ..fast_config()
    }
}

/// Submits one job per identifier list and returns their planned durations
/// (seconds) in submit order, once all finished.
async fn durations(env: &Env, jobs: &[Vec<String>]) -> Vec<f64> {
    let t0 = Instant::now();
    let before = env.sim.stats().jobs_completed;
    for ids in jobs {
        env.submit_ok(ids).await;
    }
    let want = before + jobs.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.sim.stats().jobs_completed < want {
        assert!(Instant::now() < deadline, "jobs never finished: {:?}", env.sim.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut intervals = env.sim.job_intervals(t0);
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    intervals.iter().rev().take(jobs.len()).rev().map(|i| i.1).collect()
}

fn batches(prefix: &str, jobs: usize, size: usize) -> Vec<Vec<String>> {
    (0..jobs).map(|j| emails(&format!("{prefix}{j}"), size)).collect()
}

#[tokio::test]
async fn with_no_unknown_identifiers_every_job_takes_base_time() {
    let scale = 0.01;
    let env = start(realistic(0.0, scale)).await;
    // Many identifiers do not resolve (match_rate 0.7): the fixed model
    // would add retrieval_time; the realistic one only counts unknown ones.
    let d = durations(&env, &batches("k", 20, 300)).await;
    assert_eq!(d.len(), 20);
    for x in &d {
        assert!((x - 2.0 * scale).abs() < 1e-6, "{d:?}");
    }
}

#[tokio::test]
async fn with_unknown_identifiers_durations_have_a_heavy_tail() {
    let scale = 0.0005; // 60 s median retrieval -> 30 ms
    let env = start(realistic(0.1, scale)).await;
    let mut d = durations(&env, &batches("t", 50, 300)).await;
    let base = 2.0 * scale;
    let longer = d.iter().filter(|x| **x > base * 1.001).count();
    assert!(longer >= 48, "{longer} of 50 longer than base_time: {d:?}");
    d.sort_by(f64::total_cmp);
    let median = d[25];
    let max = d[49];
    assert!(median > 10.0 * base, "median {median}");
    assert!(max > 1.8 * median, "max {max} vs median {median}: {d:?}");
}

#[tokio::test]
async fn the_known_unknown_split_is_fixed_by_seed_and_identifier() {
    // sigma 0: an unknown identifier takes exactly the median (10 s), a known
    // one base_time (1 s); one identifier per job shows its split.
    let cfg = |seed: u64| SimConfig {
        seed,
        base_time: Duration::from_secs(1),
        retrieval_median: Duration::from_secs(10),
        retrieval_sigma: 0.0,
        ..realistic(0.5, 0.005)
    };
    let ids: Vec<String> = emails("split", 40);
    let singles: Vec<Vec<String>> = ids.iter().map(|i| vec![i.clone()]).collect();
    let unknown = |d: &[f64]| d.iter().map(|x| *x > 0.01).collect::<Vec<bool>>();

    let a = start(cfg(42)).await;
    let first = unknown(&durations(&a, &singles).await);
    let n = first.iter().filter(|u| **u).count();
    assert!((5..=35).contains(&n), "{n} of 40 unknown");
    let upper: Vec<Vec<String>> = ids.iter().map(|i| vec![i.to_uppercase()]).collect();
    assert_eq!(
        unknown(&durations(&a, &upper).await),
        first,
        "same identifier, same split"
    );
    let expected: Vec<bool> = ids.iter().map(|i| needs_retrieval(42, 0.5, i)).collect();
    assert_eq!(first, expected);

    let b = start(cfg(42)).await;
    assert_eq!(unknown(&durations(&b, &singles).await), first, "same seed, same split");
    let c = start(cfg(7)).await;
    assert_ne!(
        unknown(&durations(&c, &singles).await),
        first,
        "another seed, another split"
    );
}

#[tokio::test]
async fn the_model_can_be_switched_at_runtime() {
    let env = start(SimConfig {
        retrieval_time: Duration::ZERO,
        ..realistic(1.0, 0.001)
    })
    .await;
    env.sim.update(|c| c.job_time_model = JobTimeModel::Fixed);
    let fixed = durations(&env, &batches("f", 3, 10)).await;
    assert!(fixed.iter().all(|x| (x - 0.002).abs() < 1e-6), "{fixed:?}");
    let resp = env
        .http
        .post(env.url("/_sim/config"))
        .json(&json!({ "job_time_model": "realistic", "retrieval_sigma": 0.0, "retrieval_median": "30s" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let real = durations(&env, &batches("r", 3, 10)).await;
    assert!(real.iter().all(|x| (x - 0.03).abs() < 1e-6), "{real:?}");
}

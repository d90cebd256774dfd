//! Simulator fault injection, webhooks and admin endpoints: injected 500s
//! per endpoint, failed jobs, corrupt/truncated/incomplete/slow/expired
//! downloads decided per request, signed webhook delivery with delay, drop
//! and failure counting, `/_sim/*` endpoints, and a throughput smoke test.

mod common;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use common::*;
use crustdata_sim::{SimConfig, SimStats};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

fn matched() -> SimConfig {
    SimConfig {
        match_rate: 1.0,
        ..fast_config()
    }
}

#[tokio::test]
async fn injected_submit_500_creates_no_job() {
    let env = start(SimConfig {
        error_rate_submit: 1.0,
        ..fast_config()
    })
    .await;
    let resp = env.submit(json!({ "business_emails": ["a@b.com"] })).await;
    assert_eq!(resp.status(), 500);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(error_type(&b), "internal_error");
    let list: Value = env.get(KEY, "/batch").await.json().await.unwrap();
    assert!(list["jobs"].as_array().unwrap().is_empty());
    let stats = env.sim.stats();
    assert_eq!(stats.submits_accepted, 0);
    assert_eq!(stats.submits_rejected_500, 1);
    assert_eq!(stats.injected_500s, 1);
    assert_eq!(stats.active_jobs, 0);
    assert_eq!(stats.identifiers_submitted, 0);
}

#[tokio::test]
async fn injected_poll_list_and_download_500s() {
    let env = start(matched()).await;
    let done = env.run_job(&emails("e", 2)).await;
    let id = done["batch_id"].as_str().unwrap();
    env.sim.update(|c| {
        c.error_rate_poll = 1.0;
        c.error_rate_list = 1.0;
        c.error_rate_download = 1.0;
    });
    let (status, b) = env.poll(id).await;
    assert_eq!(status, 500);
    assert_eq!(error_type(&b), "internal_error");
    let list = env.get(KEY, "/batch").await;
    assert_eq!(list.status(), 500);
    let dl = env.download(done["download_url"].as_str().unwrap()).await;
    assert_eq!(dl.status(), 500);
    assert!(dl.text().await.unwrap().contains("<Code>InternalError</Code>"));
    assert_eq!(env.sim.stats().injected_500s, 3);
    env.sim.update(|c| {
        c.error_rate_poll = 0.0;
        c.error_rate_list = 0.0;
        c.error_rate_download = 0.0;
    });
    assert_eq!(env.poll(id).await.0, 200);
    assert_eq!(env.download(done["download_url"].as_str().unwrap()).await.status(), 200);
}

async fn download_bytes(env: &Env, url: &str) -> Vec<u8> {
    let resp = env.download(url).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn corrupt_and_truncated_downloads_fail_to_decode_then_recover() {
    let env = start(matched()).await;
    let done = env.run_job(&emails("c", 50)).await;
    let url = done["download_url"].as_str().unwrap();
    let good = download_bytes(&env, url).await;
    assert_eq!(gunzip(&good).unwrap().lines().count(), 50);

    env.sim.update(|c| c.corrupt_rate = 1.0);
    for _ in 0..5 {
        let bad = download_bytes(&env, url).await;
        assert_ne!(bad, good);
        assert!(gunzip(&bad).is_err(), "corrupt body must not decode");
    }
    env.sim.update(|c| {
        c.corrupt_rate = 0.0;
        c.truncate_rate = 1.0;
    });
    for _ in 0..5 {
        let cut = download_bytes(&env, url).await;
        assert!(cut.len() < good.len());
        assert_eq!(&cut[..], &good[..cut.len()], "a prefix of the real stream");
        assert!(gunzip(&cut).is_err(), "truncated body must not decode");
    }
    env.sim.update(|c| c.truncate_rate = 0.0);
    assert_eq!(download_bytes(&env, url).await, good, "a re-download succeeds");
    assert_eq!(env.sim.stats().downloads_damaged, 10);
}

#[tokio::test]
async fn missing_line_fault_silently_drops_one_line() {
    let env = start(SimConfig {
        missing_line_rate: 1.0,
        ..matched()
    })
    .await;
    let done = env.run_job(&emails("m", 20)).await;
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    assert_eq!(lines.len(), 19);
    assert_eq!(done["result_count"], 20);
}

#[tokio::test]
async fn faults_are_decided_per_request() {
    let env = start(SimConfig {
        corrupt_rate: 0.5,
        ..matched()
    })
    .await;
    let done = env.run_job(&emails("p", 10)).await;
    let url = done["download_url"].as_str().unwrap();
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..30 {
        match gunzip(&download_bytes(&env, url).await) {
            Ok(_) => ok += 1,
            Err(_) => bad += 1,
        }
    }
    assert!(ok > 0 && bad > 0, "ok {ok}, bad {bad}");
}

#[tokio::test]
async fn slow_download_trickles_the_body() {
    let env = start(SimConfig {
        slow_download: Duration::from_millis(600),
        ..matched()
    })
    .await;
    let done = env.run_job(&emails("s", 30)).await;
    let started = Instant::now();
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lines.len(), 30);
}

#[tokio::test]
async fn expired_link_rate_answers_403_expired() {
    let env = start(SimConfig {
        expired_link_rate: 1.0,
        ..matched()
    })
    .await;
    let done = env.run_job(&emails("x", 1)).await;
    let resp = env.download(done["download_url"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"));
}

/// A webhook receiver: (x-crustdata-signature, raw body) per request.
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let sig = headers
                    .get("x-crustdata-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let _ = tx.send((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

fn verify_signature(header: &str, body: &[u8], key: &str) -> bool {
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let ts: i64 = t.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

async fn submit_with_hook(env: &Env, hook: &str, n: usize) -> String {
    let v: Value = env
        .submit(json!({ "business_emails": emails("hook", n), "webhook_url": hook }))
        .await
        .json()
        .await
        .unwrap();
    v["batch_id"].as_str().unwrap().to_string()
}

async fn wait_stats(env: &Env, pred: impl Fn(&SimStats) -> bool) -> SimStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = env.sim.stats();
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats never satisfied: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn webhook_is_posted_signed_when_the_job_completes() {
    let env = start(matched()).await;
    let (hook, mut rx) = receiver().await;
    let id = submit_with_hook(&env, &hook, 3).await;
    let (sig, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("webhook arrives without polling")
        .unwrap();
    assert!(verify_signature(&sig, &body, KEY), "bad signature {sig}");
    assert!(!verify_signature(&sig, &body, KEY2));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["batch_id"], id.as_str());
    assert_eq!(v["status"], "completed");
    assert_eq!(v["result_count"], 3);
    assert!(v["download_url"].as_str().unwrap().starts_with("http://"));
    wait_stats(&env, |s| s.webhooks_sent == 1).await;
}

#[tokio::test]
async fn webhook_reports_failed_jobs_too() {
    let env = start(SimConfig {
        job_failure_rate: 1.0,
        ..matched()
    })
    .await;
    let (hook, mut rx) = receiver().await;
    submit_with_hook(&env, &hook, 1).await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "failed");
    assert!(v["error_message"].is_string());
}

#[tokio::test]
async fn webhook_delay_is_honoured() {
    let env = start(SimConfig {
        webhook_delay: Duration::from_millis(500),
        ..matched()
    })
    .await;
    let (hook, mut rx) = receiver().await;
    let started = Instant::now();
    submit_with_hook(&env, &hook, 1).await;
    rx.recv().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropped_and_failed_webhooks_are_counted() {
    let env = start(SimConfig {
        webhook_drop_rate: 1.0,
        ..matched()
    })
    .await;
    let (hook, mut rx) = receiver().await;
    submit_with_hook(&env, &hook, 1).await;
    wait_stats(&env, |s| s.webhooks_dropped == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a dropped webhook never arrives");

    // A closed port: the POST fails and is counted, without retries.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    env.sim.update(|c| c.webhook_drop_rate = 0.0);
    submit_with_hook(&env, &format!("http://{closed}/hook"), 1).await;
    let s = wait_stats(&env, |s| s.webhooks_failed == 1).await;
    assert_eq!(s.webhooks_sent, 0);
}

#[tokio::test]
async fn admin_endpoints_expose_stats_patch_config_and_reset() {
    let env = start(matched()).await;
    env.run_job(&emails("adm", 2)).await;
    let stats: SimStats = env
        .http
        .get(env.url("/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, env.sim.stats());
    assert_eq!(stats.submits_accepted, 1);

    let patch =
        json!({ "add_api_keys": ["new-key"], "error_rate_poll": 1.0, "latency_scale": 0.0, "pending_time": "1s" });
    let resp = env
        .http
        .post(env.url("/_sim/config"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(env.get("new-key", "/batch").await.status(), 200, "added key accepted");
    let id = stats_job_id(&env).await;
    assert_eq!(env.poll(&id).await.0, 500, "error_rate_poll applied");

    for bad in [
        json!({ "error_rate_poll": 2.0 }),
        json!({ "no_such_knob": 1 }),
        json!({ "jitter": "soon" }),
    ] {
        let resp = env.http.post(env.url("/_sim/config")).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let resp = env
        .http
        .post(env.url("/_sim/config"))
        .json(&json!({ "api_keys": ["only-this"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(env.get(KEY, "/batch").await.status(), 401, "replaced keys");

    let resp = env.http.post(env.url("/_sim/reset-stats")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(env.sim.stats(), SimStats::default());
}

async fn stats_job_id(env: &Env) -> String {
    let list: Value = env.get(KEY, "/batch").await.json().await.unwrap();
    list["jobs"][0]["batch_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustains_many_full_jobs_at_zero_latency() {
    let env = std::sync::Arc::new(start(fast_config()).await);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..5 {
        let env = env.clone();
        workers.push(tokio::spawn(async move {
            for j in 0..20 {
                let ids = emails(&format!("perf{w}-{j}"), 300);
                let done = env.run_job(&ids).await;
                assert_eq!(done["status"], "completed");
                if done["result_count"].as_u64().unwrap() > 0 && j % 10 == 0 {
                    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
                    assert_eq!(lines.len(), 300);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let stats = env.sim.stats();
    assert_eq!(stats.submits_accepted, 100);
    assert_eq!(stats.identifiers_submitted, 30_000);
    assert_eq!(stats.unique_identifiers_submitted, 30_000);
    assert_eq!(stats.rate_limited_429, 0);
    assert!(stats.max_active_jobs_per_key <= 5);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

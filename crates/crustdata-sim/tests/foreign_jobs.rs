//! Simulator jobs of other clients sharing a key (`SimHandle::foreign_job`,
//! `POST /_sim/jobs`): they hold the key's active-job slots, are listed and
//! polled with the key, complete after their own duration with result files,
//! are billed apart (`foreign_credits_charged`) and bypass limits and faults.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crustdata_sim::{MatchType, SimConfig};
use serde_json::{json, Value};

fn matched() -> SimConfig {
    SimConfig {
        match_rate: 1.0,
        ..fast_config()
    }
}

async fn post_job(env: &Env, body: Value) -> (u16, Value) {
    let resp = env.http.post(env.url("/_sim/jobs")).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn batch_ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["batch_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_foreign_job_holds_one_of_the_keys_slots() {
    let env = start(SimConfig {
        latency_scale: 1.0,
        pending_time: Duration::ZERO,
        base_time: Duration::from_secs(3),
        retrieval_time: Duration::ZERO,
        jitter: Duration::ZERO,
        ..matched()
    })
    .await;
    let foreign = env.sim.foreign_job(KEY, emails("other", 2), Duration::from_secs(3));
    assert!(uuid::Uuid::parse_str(&foreign).is_ok());
    let mut last_remaining = String::new();
    for i in 0..4 {
        let resp = env
            .submit(json!({ "business_emails": emails(&format!("own{i}"), 1) }))
            .await;
        assert_eq!(resp.status(), 200, "ordinary submit {i}");
        last_remaining = resp.headers()["x-ratelimit-remaining"].to_str().unwrap().to_string();
    }
    assert_eq!(last_remaining, "0", "the foreign job counts in the slots");
    let fifth = env.submit(json!({ "business_emails": ["five@x.com"] })).await;
    assert_eq!(fifth.status(), 429);
    // Another key is not affected.
    let other = env
        .submit_raw(KEY2, &json!({ "business_emails": ["k2@x.com"] }).to_string())
        .await;
    assert_eq!(other.status(), 200);
    let s = env.sim.stats();
    assert_eq!(s.foreign_jobs, 1);
    assert_eq!(s.submits_accepted, 5, "4 ordinary + 1 of KEY2, the foreign job apart");
    assert_eq!(s.rate_limited_active_jobs, 1);
    assert_eq!(s.active_jobs, 6);
    assert_eq!(s.max_active_jobs_per_key, 5);
    assert_eq!(s.identifiers_submitted, 5, "foreign identifiers are not the client's");
}

#[tokio::test]
async fn a_foreign_job_is_listed_polled_and_completes_after_its_duration() {
    let env = start(matched()).await;
    let first = env.run_job(&emails("first", 2)).await;
    let (status, v) = post_job(&env, json!({ "key": KEY, "count": 3, "duration": "400ms" })).await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    let foreign = v["batch_id"].as_str().unwrap().to_string();
    let last = env.submit_ok(&emails("last", 1)).await;

    let list: Value = env.get(KEY, "/batch").await.json().await.unwrap();
    let first_id = first["batch_id"].as_str().unwrap().to_string();
    let last_id = last["batch_id"].as_str().unwrap().to_string();
    assert_eq!(
        batch_ids(&list),
        vec![last_id, foreign.clone(), first_id],
        "newest first"
    );
    assert_eq!(list["jobs"][1]["identifier_count"], 3);
    let other: Value = env.get(KEY2, "/batch").await.json().await.unwrap();
    assert!(batch_ids(&other).is_empty(), "only its key sees it");

    let (status, p) = env.poll(&foreign).await;
    assert_eq!(status, 200);
    assert_ne!(p["status"], "completed", "latency_scale 0 does not shorten it");
    tokio::time::sleep(Duration::from_millis(250).saturating_sub(started.elapsed())).await;
    assert_ne!(env.poll(&foreign).await.1["status"], "completed");
    let done = env.wait_done(&foreign).await;
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result_count"], 3);
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    let mut on: Vec<String> = lines
        .iter()
        .map(|l| l["matched_on"].as_str().unwrap().to_string())
        .collect();
    on.sort();
    assert_eq!(
        on,
        vec![
            "foreign-1-0@other-tool.example",
            "foreign-1-1@other-tool.example",
            "foreign-1-2@other-tool.example"
        ]
    );
    assert!(lines.iter().all(|l| l["match_type"] == "business_email"));

    let s = env.sim.stats();
    assert_eq!(s.foreign_jobs, 1);
    assert_eq!(s.submits_accepted, 2);
    assert_eq!(s.foreign_credits_charged, 3);
    assert_eq!(s.credits_charged, 2 + 1 + 3, "foreign credits count in credits_charged");
    assert_eq!(
        s.credits_charged - s.foreign_credits_charged,
        3,
        "what the client spent"
    );
    assert_eq!(s.jobs_completed, 3);
    assert_eq!(env.sim.job_intervals(started).len(), 3);
}

#[tokio::test]
async fn foreign_jobs_bypass_limits_credits_and_faults() {
    let env = start(SimConfig {
        max_active_jobs: 1,
        credit_balance: Some(0),
        error_rate_submit: 1.0,
        lost_response_rate: 1.0,
        refuse_submits_status: 403,
        ..matched()
    })
    .await;
    let long = Duration::from_secs(30);
    let a = env.sim.foreign_job(KEY, vec!["x@y.com".to_string()], long);
    let b = env.sim.foreign_job_of(
        KEY,
        MatchType::ProfileUrl,
        vec!["https://www.linkedin.com/in/someone".to_string()],
        Duration::ZERO,
    );
    assert_ne!(a, b);
    let (status, posted) = post_job(
        &env,
        json!({ "key": KEY, "identifiers": ["https://www.linkedin.com/in/x"], "duration": 0,
                "identifier_type": "professional_network_profile_url" }),
    )
    .await;
    assert_eq!(status, 200);
    env.wait_done(posted["batch_id"].as_str().unwrap()).await;
    let done = env.wait_done(&b).await;
    assert_eq!(done["status"], "completed");
    let lines = env.download_lines(done["download_url"].as_str().unwrap()).await;
    assert_eq!(lines[0]["match_type"], "professional_network_profile_url");
    let refused = env.submit(json!({ "business_emails": ["own@x.com"] })).await;
    assert_eq!(refused.status(), 403, "ordinary submits are refused meanwhile");
    let s = env.sim.stats();
    assert_eq!(s.foreign_jobs, 3);
    assert_eq!((s.submits_accepted, s.injected_500s, s.submit_answers_lost), (0, 0, 0));
    assert_eq!(s.foreign_credits_charged, 2);
}

#[tokio::test]
async fn the_jobs_endpoint_rejects_bad_bodies() {
    let env = start(matched()).await;
    for bad in [
        json!({ "key": KEY, "count": 3 }),
        json!({ "key": KEY, "duration": "1s" }),
        json!({ "key": KEY, "count": 3, "identifiers": ["a@b.com"], "duration": "1s" }),
        json!({ "key": KEY, "count": 0, "duration": "1s" }),
        json!({ "key": KEY, "count": 301, "duration": "1s" }),
        json!({ "key": KEY, "identifiers": [], "duration": "1s" }),
        json!({ "key": KEY, "identifiers": [" "], "duration": "1s" }),
        json!({ "key": "", "count": 1, "duration": "1s" }),
        json!({ "key": KEY, "count": 1, "duration": "soon" }),
        json!({ "key": KEY, "count": 1, "duration": "1s", "identifier_type": "phone" }),
        json!({ "key": KEY, "count": 1, "duration": "1s", "webhook_url": "http://x/h" }),
    ] {
        let (status, body) = post_job(&env, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(error_type(&body), "invalid_request");
    }
    assert_eq!(env.sim.stats().foreign_jobs, 0);
    let list: Value = env.get(KEY, "/batch").await.json().await.unwrap();
    assert!(batch_ids(&list).is_empty());
}

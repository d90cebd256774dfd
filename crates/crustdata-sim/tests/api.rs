//! Simulator API rules: authentication, version header, body validation,
//! submit response shape, 404s, active-job and request-rate limits,
//! credits and listing.

mod common;

use std::time::Duration;

use common::*;
use crustdata_sim::SimConfig;
use serde_json::{json, Value};

async fn status_and_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_on_every_endpoint() {
    let env = start(fast_config()).await;
    let body = json!({ "business_emails": ["a@b.com"] }).to_string();
    let no_auth = env
        .http
        .post(env.url("/batch/person/identify"))
        .header("x-api-version", VERSION)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, b) = status_and_body(no_auth).await;
    assert_eq!(status, 401);
    assert_eq!(error_type(&b), "unauthorized");

    let (status, b) = status_and_body(env.submit_raw("wrong-key", &body).await).await;
    assert_eq!(status, 401);
    assert_eq!(error_type(&b), "unauthorized");

    for path in ["/batch/00000000-0000-4000-8000-000000000000", "/batch"] {
        let (status, b) = status_and_body(env.get("nope", path).await).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(error_type(&b), "unauthorized");
        let resp = env.http.get(env.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without header");
    }
    let stats = env.sim.stats();
    assert_eq!(stats.submits_rejected_401, 2);
    assert_eq!(stats.unauthorized_401, 6);
    assert_eq!(stats.submits_accepted, 0);
}

#[tokio::test]
async fn legacy_token_scheme_is_accepted() {
    let env = start(fast_config()).await;
    let resp = env
        .http
        .post(env.url("/batch/person/identify"))
        .header("authorization", format!("Token {KEY}"))
        .header("x-api-version", VERSION)
        .body(json!({ "business_emails": ["a@b.com"] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn submit_requires_the_version_header_but_poll_does_not() {
    let env = start(fast_config()).await;
    let body = json!({ "business_emails": ["a@b.com"] }).to_string();
    let missing = env
        .http
        .post(env.url("/batch/person/identify"))
        .bearer_auth(KEY)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, b) = status_and_body(missing).await;
    assert_eq!(status, 400);
    assert_eq!(error_type(&b), "invalid_request");
    assert!(b["error"]["message"].as_str().unwrap().contains("x-api-version"));

    let wrong = env
        .http
        .post(env.url("/batch/person/identify"))
        .bearer_auth(KEY)
        .header("x-api-version", "2024-01-01")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(env.sim.stats().submits_rejected_400, 2);

    let sub = env.submit_ok(&emails("v", 1)).await;
    let (status, _) = env.poll(sub["batch_id"].as_str().unwrap()).await;
    assert_eq!(status, 200, "poll without x-api-version must work");
}

#[tokio::test]
async fn every_invalid_body_is_a_400_with_a_clear_message() {
    let env = start(fast_config()).await;
    let too_many: Vec<String> = emails("m", 301);
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid json", "{not json".to_string(), "not valid JSON"),
        ("not an object", json!(["a@b.com"]).to_string(), "JSON object"),
        (
            "no identifier key",
            json!({ "webhook_url": "http://x.io/h" }).to_string(),
            "missing identifier",
        ),
        (
            "both keys",
            json!({ "business_emails": ["a@b.com"], "professional_network_profile_urls": ["https://x/in/a"] })
                .to_string(),
            "exactly one",
        ),
        (
            "emails plus business_emails",
            json!({ "business_emails": ["a@b.com"], "emails": ["c@d.com"] }).to_string(),
            "exactly one",
        ),
        (
            "empty array",
            json!({ "business_emails": [] }).to_string(),
            "at least one",
        ),
        (
            "not an array",
            json!({ "business_emails": "a@b.com" }).to_string(),
            "array",
        ),
        (
            "more than 300",
            json!({ "business_emails": too_many }).to_string(),
            "at most 300",
        ),
        (
            "non-string",
            json!({ "business_emails": ["a@b.com", 7] }).to_string(),
            "[1] must be a string",
        ),
        (
            "empty string",
            json!({ "business_emails": ["a@b.com", "b@c.com", "  "] }).to_string(),
            "[2] must be a non-empty",
        ),
        (
            "relative webhook",
            json!({ "business_emails": ["a@b.com"], "webhook_url": "/hook" }).to_string(),
            "webhook_url",
        ),
        (
            "ftp webhook",
            json!({ "business_emails": ["a@b.com"], "webhook_url": "ftp://x.io/h" }).to_string(),
            "webhook_url",
        ),
        (
            "non-string webhook",
            json!({ "business_emails": ["a@b.com"], "webhook_url": 5 }).to_string(),
            "webhook_url",
        ),
    ];
    for (name, body, needle) in &cases {
        let (status, b) = status_and_body(env.submit_raw(KEY, body).await).await;
        assert_eq!(status, 400, "{name}: {b}");
        assert_eq!(error_type(&b), "invalid_request", "{name}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{name}: message {msg:?} lacks {needle:?}");
    }
    let (_, b) = status_and_body(env.submit_raw(KEY, &cases[8].1).await).await;
    assert_eq!(b["error"]["metadata"]["index"], 1, "metadata names the offending index");
    let stats = env.sim.stats();
    assert_eq!(stats.submits_rejected_400, cases.len() as u64 + 1);
    assert_eq!(stats.submits_accepted, 0);
}

#[tokio::test]
async fn valid_variants_are_accepted() {
    let env = start(fast_config()).await;
    let ok_bodies = [
        json!({ "business_emails": emails("max", 300) }),
        json!({ "professional_network_profile_urls": ["https://www.linkedin.com/in/jane"] }),
        json!({ "emails": ["someone@gmail.com"] }),
        json!({ "business_emails": ["a@b.com"], "unknown_field": {"x": 1}, "webhook_url": "https://hooks.example.com/x" }),
    ];
    for body in ok_bodies {
        let resp = env.submit(body.clone()).await;
        assert_eq!(resp.status(), 200, "{body}");
        // Let the instant job finish so the active-job limit never interferes.
        let v: Value = resp.json().await.unwrap();
        env.wait_done(v["batch_id"].as_str().unwrap()).await;
    }
}

#[tokio::test]
async fn submit_response_has_the_documented_shape() {
    let env = start(fast_config()).await;
    let v = env.submit_ok(&emails("shape", 3)).await;
    let id = v["batch_id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).expect("batch_id is a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(v["status"], "pending");
    assert_eq!(v["entity"], "person");
    assert_eq!(v["action"], "identify");
    assert_eq!(v["identifier_count"], 3);
    assert_eq!(v["entities_requested"], 3);
    assert_eq!(v["status_url"], format!("/batch/{id}"), "status_url is relative");
    assert!(v.get("download_url").is_none());
}

#[tokio::test]
async fn unknown_or_foreign_jobs_are_404() {
    let env = start(fast_config()).await;
    let v = env.submit_ok(&emails("mine", 1)).await;
    let id = v["batch_id"].as_str().unwrap();
    let (status, b) = status_and_body(env.get(KEY2, &format!("/batch/{id}")).await).await;
    assert_eq!(status, 404, "another key's job");
    assert_eq!(error_type(&b), "not_found");
    let (status, _) = env.poll("5c1f6a4e-0000-4000-8000-000000000000").await;
    assert_eq!(status, 404);
    let (status, _) = env.poll("not-a-uuid").await;
    assert_eq!(status, 404);
    let (status, b) = status_and_body(env.get(KEY, "/no/such/path").await).await;
    assert_eq!(status, 404);
    assert_eq!(error_type(&b), "not_found");
    let resp = env.get(KEY, "/batch/person/identify").await;
    let (status, b) = status_and_body(resp).await;
    assert_eq!(status, 405);
    assert_eq!(error_type(&b), "method_not_allowed");
    assert_eq!(env.sim.stats().polls_not_found, 3);
}

#[tokio::test]
async fn sixth_active_job_gets_429_with_rate_limit_headers() {
    let env = start(SimConfig {
        latency_scale: 1.0,
        pending_time: Duration::from_millis(100),
        base_time: Duration::from_millis(2500),
        retrieval_time: Duration::ZERO,
        jitter: Duration::ZERO,
        ..fast_config()
    })
    .await;
    for _ in 0..5 {
        env.submit_ok(&emails("lim", 1)).await;
    }
    let resp = env.submit(json!({ "business_emails": ["six@x.com"] })).await;
    assert_eq!(resp.status(), 429);
    let h = resp.headers();
    assert_eq!(h["x-ratelimit-limit"], "5");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&reset), "reset {reset}");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(error_type(&b), "rate_limited");

    // The limit is per key.
    let other = env
        .submit_raw(KEY2, &json!({ "business_emails": ["k2@x.com"] }).to_string())
        .await;
    assert_eq!(other.status(), 200);

    let stats = env.sim.stats();
    assert_eq!(stats.rate_limited_429, 1);
    assert_eq!(stats.rate_limited_active_jobs, 1);
    assert_eq!(stats.submits_rejected_429, 1);
    assert_eq!(stats.active_jobs, 6);
    assert_eq!(stats.max_concurrent_active_jobs, 6);
    assert_eq!(stats.max_active_jobs_per_key, 5);
}

#[tokio::test]
async fn a_finished_job_frees_its_slot() {
    let env = start(SimConfig {
        max_active_jobs: 1,
        latency_scale: 1.0,
        pending_time: Duration::ZERO,
        base_time: Duration::from_millis(150),
        retrieval_time: Duration::ZERO,
        jitter: Duration::ZERO,
        ..fast_config()
    })
    .await;
    env.submit_ok(&emails("a", 1)).await;
    assert_eq!(
        env.submit(json!({ "business_emails": ["b@x.com"] })).await.status(),
        429
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        env.submit(json!({ "business_emails": ["b@x.com"] })).await.status(),
        200
    );
}

#[tokio::test]
async fn requests_per_minute_limit_answers_429() {
    let env = start(SimConfig {
        requests_per_minute: 2,
        ..fast_config()
    })
    .await;
    env.submit_ok(&emails("r1", 1)).await;
    env.submit_ok(&emails("r2", 1)).await;
    let resp = env.submit(json!({ "business_emails": ["r3@x.com"] })).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = resp.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset));
    assert_eq!(env.sim.stats().rate_limited_rpm, 1);
    // Other endpoints and keys have their own windows.
    assert_eq!(env.get(KEY, "/batch").await.status(), 200);
    assert_eq!(
        env.submit_raw(KEY2, &json!({ "business_emails": ["k2@x.com"] }).to_string())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn exhausted_credits_answer_402_until_topped_up() {
    let env = start(SimConfig {
        credit_balance: Some(3),
        match_rate: 1.0,
        ..fast_config()
    })
    .await;
    let done = env.run_job(&emails("c", 3)).await;
    assert_eq!(done["result_count"], 3);
    let resp = env.submit(json!({ "business_emails": ["more@x.com"] })).await;
    assert_eq!(resp.status(), 402);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(error_type(&b), "insufficient_credits");
    assert_eq!(env.sim.stats().submits_rejected_402, 1);
    // Other keys have their own balance.
    assert_eq!(
        env.submit_raw(KEY2, &json!({ "business_emails": ["k2@x.com"] }).to_string())
            .await
            .status(),
        200
    );
    env.sim.update(|c| c.credit_balance = Some(10));
    assert_eq!(
        env.submit(json!({ "business_emails": ["more@x.com"] })).await.status(),
        200
    );
}

#[tokio::test]
async fn list_pages_filters_and_isolates_keys() {
    let env = start(fast_config()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = env.run_job(&emails(&format!("l{i}"), 1)).await;
        ids.push(v["batch_id"].as_str().unwrap().to_string());
    }
    let page: Value = env.get(KEY, "/batch?limit=2").await.json().await.unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["jobs"][0]["batch_id"], ids[4].as_str(), "newest first");
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = page["next_cursor"].as_str().unwrap().to_string();
    seen.extend(
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["batch_id"].as_str().unwrap().to_string()),
    );
    loop {
        let p: Value = env
            .get(KEY, &format!("/batch?limit=2&cursor={cursor}"))
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            p["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["batch_id"].as_str().unwrap().to_string()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => {
                assert_eq!(p["has_more"], false);
                break;
            }
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let done: Value = env.get(KEY, "/batch?status=completed").await.json().await.unwrap();
    assert_eq!(done["jobs"].as_array().unwrap().len(), 5);
    assert_eq!(done["jobs"][0]["status"], "completed");
    let none: Value = env.get(KEY, "/batch?status=pending").await.json().await.unwrap();
    assert!(none["jobs"].as_array().unwrap().is_empty());
    assert_eq!(none["next_cursor"], Value::Null);
    let other: Value = env.get(KEY2, "/batch").await.json().await.unwrap();
    assert!(other["jobs"].as_array().unwrap().is_empty(), "another key sees nothing");
    for bad in [
        "/batch?limit=0",
        "/batch?limit=x",
        "/batch?status=done",
        "/batch?cursor=zz",
    ] {
        assert_eq!(env.get(KEY, bad).await.status(), 400, "{bad}");
    }
    assert_eq!(env.sim.stats().lists, 6);
}

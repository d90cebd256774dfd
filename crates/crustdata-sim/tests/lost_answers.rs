//! Simulator lost answers of accepted submits: the job is created (listed,
//! counted, billed) but the client gets a 504, a cut connection (a transport
//! error) or an answer later than its timeout; plus the `/_sim/config`
//! checks of the new knobs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crustdata_sim::SimConfig;
use serde_json::{json, Value};

fn matched() -> SimConfig {
    SimConfig {
        match_rate: 1.0,
        ..fast_config()
    }
}

/// Sends a submit of `ids` with `client`, returning the raw outcome.
async fn send_submit(env: &Env, client: &reqwest::Client, ids: &[String]) -> reqwest::Result<reqwest::Response> {
    client
        .post(env.url("/batch/person/identify"))
        .bearer_auth(KEY)
        .header("x-api-version", VERSION)
        .json(&json!({ "business_emails": ids }))
        .send()
        .await
}

/// The batch ids `GET /batch` lists for the primary key.
async fn listed(env: &Env) -> Vec<String> {
    let list: Value = env.get(KEY, "/batch?limit=100").await.json().await.unwrap();
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["batch_id"].as_str().unwrap().to_string())
        .collect()
}

async fn patch(env: &Env, body: Value) -> u16 {
    let resp = env.http.post(env.url("/_sim/config")).json(&body).send().await.unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn lost_answer_is_a_504_but_the_job_exists() {
    let env = start(SimConfig {
        lost_response_rate: 1.0,
        ..matched()
    })
    .await;
    let resp = send_submit(&env, &env.http, &emails("lost", 2)).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(listed(&env).await.len(), 1);
    let s = env.sim.stats();
    assert_eq!((s.submits_accepted, s.submit_answers_lost), (1, 1));
    assert_eq!((s.submit_answers_cut, s.submit_answers_slow), (0, 0));
    assert_eq!(s.submits_rejected_total, 0);
}

#[tokio::test]
async fn cut_answer_is_a_transport_error_but_the_job_exists_and_is_billed() {
    let env = start(matched()).await;
    assert_eq!(patch(&env, json!({ "cut_response_rate": 1.0 })).await, 200);
    let outcome = send_submit(&env, &env.http, &emails("cut", 3)).await;
    let err = match outcome {
        Err(e) => e,
        Ok(resp) => resp.bytes().await.expect_err("the body must break off"),
    };
    assert!(err.status().is_none(), "a transport error, not a status: {err:?}");
    assert!(!err.is_timeout(), "cut at once, not timed out: {err:?}");

    let ids = listed(&env).await;
    assert_eq!(ids.len(), 1, "the job was created");
    let done = env.wait_done(&ids[0]).await;
    assert_eq!(done["status"], "completed");
    let s = env.sim.stats();
    assert_eq!(s.submits_accepted, 1);
    assert_eq!(
        (s.submit_answers_lost, s.submit_answers_cut, s.submit_answers_slow),
        (1, 1, 0)
    );
    assert_eq!(s.submits_rejected_total, 0);
    assert_eq!(s.credits_charged, 3, "billed like any job");

    // The server survives cutting connections: a later submit is answered.
    env.sim.update(|c| c.cut_response_rate = 0.0);
    assert_eq!(
        send_submit(&env, &env.http, &emails("after", 1))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn slow_answer_makes_a_short_timeout_give_up_but_the_job_exists() {
    let env = start(SimConfig {
        slow_response_rate: 1.0,
        slow_response: Duration::from_secs(1),
        ..matched()
    })
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = send_submit(&env, &impatient, &emails("slow", 2))
        .await
        .expect_err("the answer comes after the client's timeout");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(listed(&env).await.len(), 1, "the job exists at once");

    // A patient client gets the normal answer, late.
    let started = Instant::now();
    let resp = send_submit(&env, &env.http, &emails("slow2", 1)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "pending");
    assert!(listed(&env)
        .await
        .contains(&v["batch_id"].as_str().unwrap().to_string()));

    let s = env.sim.stats();
    assert_eq!(s.submits_accepted, 2);
    assert_eq!(
        (s.submit_answers_lost, s.submit_answers_cut, s.submit_answers_slow),
        (2, 0, 2)
    );
}

#[tokio::test]
async fn all_three_kinds_count_as_lost_answers() {
    let env = start(matched()).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    env.sim.update(|c| c.lost_response_rate = 1.0);
    assert_eq!(
        send_submit(&env, &impatient, &emails("a", 1)).await.unwrap().status(),
        504
    );
    env.sim.update(|c| {
        c.lost_response_rate = 0.0;
        c.cut_response_rate = 1.0;
    });
    let cut = match send_submit(&env, &impatient, &emails("b", 1)).await {
        Err(e) => Some(e),
        Ok(resp) => resp.bytes().await.err(),
    };
    assert!(cut.is_some(), "cut connection");
    assert_eq!(
        patch(
            &env,
            json!({ "cut_response_rate": 0.0, "slow_response_rate": 1.0, "slow_response": "800ms" })
        )
        .await,
        200
    );
    let slow = send_submit(&env, &impatient, &emails("c", 1)).await.unwrap_err();
    assert!(slow.is_timeout());
    assert_eq!(listed(&env).await.len(), 3);
    let s = env.sim.stats();
    assert_eq!(s.submits_accepted, 3);
    assert_eq!(
        (s.submit_answers_lost, s.submit_answers_cut, s.submit_answers_slow),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn config_patch_accepts_the_new_knobs_and_rejects_bad_values() {
    let env = start(matched()).await;
    let good = json!({
        "cut_response_rate": 0.0,
        "slow_response_rate": 0.0,
        "slow_response": "2s",
        "job_time_model": "realistic",
        "unknown_rate": 0.2,
        "retrieval_median": "30s",
        "retrieval_sigma": 0.5,
        "variants": { "undated_rate": 0.3 },
    });
    assert_eq!(patch(&env, good).await, 200);
    assert_eq!(
        patch(&env, json!({ "job_time_model": "fixed", "slow_response": 1.5 })).await,
        200
    );
    for bad in [
        json!({ "cut_response_rate": 1.5 }),
        json!({ "slow_response_rate": -0.1 }),
        json!({ "unknown_rate": 2.0 }),
        json!({ "variants": { "undated_rate": 1.1 } }),
        json!({ "job_time_model": "lognormal" }),
        json!({ "job_time_model": 1 }),
        json!({ "retrieval_sigma": -1.0 }),
        json!({ "retrieval_median": "soon" }),
        json!({ "slow_response": "later" }),
        // Nothing of a rejected patch is applied.
        json!({ "cut_response_rate": 1.0, "unknown_rate": 7.0 }),
    ] {
        assert_eq!(patch(&env, bad.clone()).await, 400, "{bad}");
    }
    assert_eq!(
        send_submit(&env, &env.http, &emails("ok", 1)).await.unwrap().status(),
        200
    );
    assert_eq!(env.sim.stats().submit_answers_lost, 0);
}

//! Simulator undated job views (`variants.undated_rate`): a job's list items,
//! poll answers and webhook bodies carry no `created_at`, decided per job, so
//! the same job is always dated or always undated.

mod common;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::routing::post;
use common::*;
use crustdata_sim::{SimConfig, Variants};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn undated(rate: f64) -> SimConfig {
    SimConfig {
        variants: Variants {
            undated_rate: rate,
            ..Variants::default()
        },
        ..fast_config()
    }
}

/// `batch_id` -> whether the view has `created_at`, for every listed job.
async fn dated_in_list(env: &Env) -> HashMap<String, bool> {
    let list: Value = env.get(KEY, "/batch?limit=100").await.json().await.unwrap();
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["batch_id"].as_str().unwrap().to_string(),
                j.get("created_at").is_some(),
            )
        })
        .collect()
}

/// A webhook receiver collecting raw bodies.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn with_rate_one_no_view_has_created_at() {
    let env = start(undated(1.0)).await;
    let (hook, mut rx) = receiver().await;
    for i in 0..5 {
        env.run_job(&emails(&format!("u{i}"), 1)).await;
    }
    let resp = env
        .submit(json!({ "business_emails": ["hook@x.com"], "webhook_url": hook }))
        .await;
    let sub: Value = resp.json().await.unwrap();
    let done = env.wait_done(sub["batch_id"].as_str().unwrap()).await;
    assert!(done.get("created_at").is_none(), "poll answer: {done}");
    assert!(done.get("completed_at").is_some(), "only created_at goes");
    let dated = dated_in_list(&env).await;
    assert_eq!(dated.len(), 6);
    assert!(dated.values().all(|d| !d), "{dated:?}");
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("webhook arrives")
        .unwrap();
    let hook_view: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(hook_view["status"], "completed");
    assert!(hook_view.get("created_at").is_none(), "webhook body: {hook_view}");

    // Rate 0 (the default) dates every job again.
    env.sim.update(|c| c.variants.undated_rate = 0.0);
    assert!(dated_in_list(&env).await.values().all(|d| *d));
}

#[tokio::test]
async fn with_rate_half_each_job_is_consistently_dated_or_not() {
    let env = start(fast_config()).await;
    let resp = env
        .http
        .post(env.url("/_sim/config"))
        .json(&json!({ "variants": { "undated_rate": 0.5 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut ids = Vec::new();
    for i in 0..40 {
        let done = env.run_job(&emails(&format!("h{i}"), 1)).await;
        ids.push(done["batch_id"].as_str().unwrap().to_string());
    }
    let first = dated_in_list(&env).await;
    let with = first.values().filter(|d| **d).count();
    assert!((5..=35).contains(&with), "{with} of 40 dated");
    for _ in 0..3 {
        assert_eq!(
            dated_in_list(&env).await,
            first,
            "the same job is the same way every time"
        );
    }
    for id in &ids {
        let (_, p) = env.poll(id).await;
        assert_eq!(
            p.get("created_at").is_some(),
            first[id],
            "poll agrees with list for {id}"
        );
    }
}

//! Helpers shared by the simulator's integration tests: start a fast
//! simulator, submit/poll/download with reqwest, gunzip result files.
#![allow(dead_code)]

use std::io::Read;
use std::time::{Duration, Instant};

use crustdata_sim::{SimConfig, SimHandle};
use serde_json::{json, Value};

/// The primary test key.
pub const KEY: &str = "sim-test-key-1";
/// A second key (another user).
pub const KEY2: &str = "sim-test-key-2";
/// The required API version.
pub const VERSION: &str = "2025-11-01";

/// A config with instant jobs and a fast sweeper.
pub fn fast_config() -> SimConfig {
    SimConfig {
        api_keys: vec![KEY.to_string(), KEY2.to_string()],
        latency_scale: 0.0,
        sweep_interval: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

/// A started simulator plus an HTTP client (no automatic decompression).
pub struct Env {
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

/// Starts a simulator with `cfg`.
pub async fn start(cfg: SimConfig) -> Env {
    let sim = SimHandle::start(cfg).await.expect("simulator starts");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    Env { sim, http }
}

/// `n` distinct emails with a prefix.
pub fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}.{i}@example{i}.com")).collect()
}

impl Env {
    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    /// POST a raw body to the submit endpoint with `key` and the version header.
    pub async fn submit_raw(&self, key: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url("/batch/person/identify"))
            .bearer_auth(key)
            .header("x-api-version", VERSION)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("submit sent")
    }

    /// Submits a JSON body with the primary key.
    pub async fn submit(&self, body: Value) -> reqwest::Response {
        self.submit_raw(KEY, &body.to_string()).await
    }

    /// Submits emails with the primary key, asserting 200; returns the body.
    pub async fn submit_ok(&self, ids: &[String]) -> Value {
        let resp = self.submit(json!({ "business_emails": ids })).await;
        assert_eq!(resp.status(), 200, "submit failed");
        resp.json().await.expect("json")
    }

    /// GET a path with `key`.
    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request sent")
    }

    /// Polls a job with the primary key; returns (status, body).
    pub async fn poll(&self, id: &str) -> (u16, Value) {
        let resp = self.get(KEY, &format!("/batch/{id}")).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    /// Polls until the job is completed or failed (10 s limit).
    pub async fn wait_done(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.poll(id).await;
            assert_eq!(status, 200, "poll failed: {body}");
            if body["status"] == "completed" || body["status"] == "failed" {
                return body;
            }
            assert!(Instant::now() < deadline, "job {id} never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Submits emails and waits for the job to finish.
    pub async fn run_job(&self, ids: &[String]) -> Value {
        let sub = self.submit_ok(ids).await;
        self.wait_done(sub["batch_id"].as_str().expect("batch_id")).await
    }

    /// Downloads an absolute URL without any Authorization header.
    pub async fn download(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.expect("download sent")
    }

    /// Downloads and gunzips a result file into its lines (asserting 200).
    pub async fn download_lines(&self, url: &str) -> Vec<Value> {
        let resp = self.download(url).await;
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.expect("body");
        let text = gunzip(&bytes).expect("valid gzip");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

/// Decompresses gzip bytes to text.
pub fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut out)?;
    Ok(out)
}

/// Asserts the vendor error shape and returns the error type.
pub fn error_type(body: &Value) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "no error object in {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    assert!(err.get("metadata").is_some(), "no metadata in {body}");
    err["type"].as_str().expect("type").to_string()
}

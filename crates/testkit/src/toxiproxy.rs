//! Network faults for the tests: Toxiproxy (`scripts/toxiproxy.sh` builds
//! it once into the cache) as a child process on a free port, and TCP
//! proxies through it between the connector and what it talks to (the
//! Kafka brokers, the API simulator). The connector is pointed at a
//! proxy's `listen` address instead of the real one; the test then adds
//! "toxics" to one direction of the traffic (`upstream`: towards the
//! server, `downstream`: back to the connector):
//!
//! - `latency` (`latency`, `jitter` in ms): every chunk is delayed;
//! - `bandwidth` (`rate` in KB/s): a slow link;
//! - `timeout` (`timeout` in ms, 0 = never): data stops flowing, and the
//!   connection is closed after the timeout;
//! - `reset_peer` (`timeout` in ms): the connection is reset (TCP RST)
//!   once data arrives;
//! - `slicer` (`average_size`, `size_variation` in bytes, `delay` in µs):
//!   data arrives in small pieces;
//! - `limit_data` (`bytes`): the connection is closed after so many bytes.
//!
//! A disabled proxy ([`Proxy::set_enabled`] `(false)`) is "down": its
//! connections are closed and new ones refused until it is enabled again.
//! Every API call asserts that it succeeded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::free_port;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Sends `req` (described by `what` in messages) and asserts a success
/// status; returns the answer's body.
async fn call(req: reqwest::RequestBuilder, what: &str) -> String {
    let resp = req.send().await.unwrap_or_else(|e| panic!("toxiproxy {what}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "toxiproxy {what}: {status} {body}");
    body
}

/// A Toxiproxy server, its API on 127.0.0.1; killed on drop (with all
/// its proxies).
pub struct Toxiproxy {
    child: Child,
    /// The API's base URL, `http://127.0.0.1:PORT`.
    pub api: String,
}

impl Toxiproxy {
    /// Starts one on a free port (building the binary on first use) and
    /// waits until its API answers.
    pub async fn start() -> Self {
        let out = Command::new(root().join("scripts/toxiproxy.sh"))
            .arg("path")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/toxiproxy.sh path");
        assert!(out.status.success(), "toxiproxy could not be built");
        let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let port = free_port();
        let dir = std::env::temp_dir()
            .join("identify-tests")
            .join(format!("toxiproxy-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("toxiproxy.log")).unwrap();
        let child = Command::new(bin)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start toxiproxy");
        let t = Self {
            child,
            api: format!("http://127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !t.answers().await {
            assert!(Instant::now() < until, "toxiproxy did not answer in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        t
    }

    async fn answers(&self) -> bool {
        let resp = http().get(format!("{}/version", self.api)).send().await;
        resp.is_ok_and(|r| r.status().is_success())
    }

    /// A new enabled proxy `name` to `upstream` (`host:port`), listening on
    /// a free port of 127.0.0.1 (Toxiproxy binds port 0 and reports the
    /// port it got, so no other process can take it in between).
    pub async fn proxy(&self, name: &str, upstream: &str) -> Proxy {
        create(&self.api, name, upstream).await
    }
}

/// A new enabled proxy `name` to `upstream` on the Toxiproxy whose API is
/// at `api` (one this process did not start, such as the cluster's),
/// listening on a free port of 127.0.0.1.
pub async fn create(api: &str, name: &str, upstream: &str) -> Proxy {
    {
        let body = json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": upstream,
            "enabled": true,
        });
        let what = format!("POST /proxies ({name})");
        let answer = call(http().post(format!("{api}/proxies")).json(&body), &what).await;
        let v: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("toxiproxy {what}: {e}: {answer}"));
        let listen = v["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("toxiproxy {what}: no listen address in {answer}"))
            .to_string();
        Proxy {
            name: name.to_string(),
            listen,
            api: api.to_string(),
        }
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One proxy of a [`Toxiproxy`].
pub struct Proxy {
    pub name: String,
    /// Where it listens, `127.0.0.1:PORT`: the address to give the client.
    pub listen: String,
    api: String,
}

impl Proxy {
    /// The proxy `name` that already exists on the Toxiproxy at `api`.
    pub fn existing(api: &str, name: &str) -> Self {
        Self {
            name: name.to_string(),
            listen: String::new(),
            api: api.to_string(),
        }
    }

    /// Deletes it (its connections are closed).
    pub async fn delete(&self) {
        let what = format!("DELETE /proxies/{}", self.name);
        call(http().delete(self.url("")), &what).await;
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/proxies/{}{tail}", self.api, self.name)
    }

    /// Adds the toxic `name` of `kind` (`latency`, `bandwidth`, `timeout`,
    /// `reset_peer`, `slicer`, `limit_data`) to `stream` (`upstream` or
    /// `downstream`), applied to a `toxicity` share (0.0 to 1.0) of the
    /// connections, with the kind's `attributes` (e.g.
    /// `json!({"latency": 300})`).
    pub async fn toxic(&self, name: &str, kind: &str, stream: &str, toxicity: f32, attributes: Value) {
        let body = json!({
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        });
        let what = format!("POST /proxies/{}/toxics ({name}: {kind})", self.name);
        call(http().post(self.url("/toxics")).json(&body), &what).await;
    }

    /// Removes the toxic `name`.
    pub async fn remove_toxic(&self, name: &str) {
        let what = format!("DELETE /proxies/{}/toxics/{name}", self.name);
        call(http().delete(self.url(&format!("/toxics/{name}"))), &what).await;
    }

    /// Removes all its toxics.
    pub async fn clear(&self) {
        let what = format!("GET /proxies/{}/toxics", self.name);
        let answer = call(http().get(self.url("/toxics")), &what).await;
        let toxics: Vec<Value> =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("toxiproxy {what}: {e}: {answer}"));
        for t in toxics {
            let name = t["name"]
                .as_str()
                .unwrap_or_else(|| panic!("toxiproxy {what}: a toxic without a name: {t}"));
            self.remove_toxic(name).await;
        }
    }

    /// Resets every connection open during a fifth of each second (200 ms
    /// of `reset_peer` after 800 ms clear), for `seconds` seconds: most
    /// resets land mid-answer. (A per-connection `reset_peer` of toxicity
    /// 0.2 would hardly ever hit a client's few pooled connections.)
    pub async fn resets(&self, seconds: u32) {
        for _ in 0..seconds {
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            self.toxic("reset", "reset_peer", "downstream", 1.0, json!({ "timeout": 0 }))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            self.remove_toxic("reset").await;
        }
    }

    /// Enables it, or disables it ("down": its connections are closed and
    /// new ones refused).
    pub async fn set_enabled(&self, enabled: bool) {
        let what = format!("POST /proxies/{} (enabled: {enabled})", self.name);
        let body = json!({ "enabled": enabled });
        call(http().post(self.url("")).json(&body), &what).await;
    }
}

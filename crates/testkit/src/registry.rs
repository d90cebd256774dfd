//! A real Schema Registry for the registry-format tests: the AxonOps
//! Schema Registry (`scripts/schema-registry.sh` builds it once into the
//! cache) as a child process on a free port, paused and resumed with
//! SIGSTOP/SIGCONT; and the test inputs made by Confluent's own Python
//! serializers (`tests/py/registry_produce.py`), not by the connector.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, kafka};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A registry with in-memory storage; killed on drop.
pub struct SchemaRegistry {
    child: Child,
    pub url: String,
}

impl SchemaRegistry {
    /// Starts one on a free port (building the binary on first use) and
    /// waits until it answers.
    pub async fn start() -> Self {
        let out = Command::new(root().join("scripts/schema-registry.sh"))
            .arg("path")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/schema-registry.sh path");
        assert!(out.status.success(), "the schema registry could not be built");
        let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let port = free_port();
        let dir = std::env::temp_dir()
            .join("identify-tests")
            .join(format!("registry-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.yaml");
        std::fs::write(
            &cfg,
            format!(
                "server:\n  host: 127.0.0.1\n  port: {port}\nstorage:\n  type: memory\nsecurity:\n  auth:\n    enabled: false\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the schema registry");
        let r = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while r.get("/subjects").await.is_none() {
            assert!(Instant::now() < until, "the schema registry did not answer in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let resp = Self::http().get(format!("{}{path}", self.url)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Lets one subject hold schemas of any type and shape.
    pub async fn compatibility_none(&self) {
        let resp = Self::http()
            .put(format!("{}/config", self.url))
            .json(&serde_json::json!({"compatibility": "NONE"}))
            .send()
            .await
            .expect("PUT /config");
        assert!(resp.status().is_success(), "PUT /config: {}", resp.status());
    }

    /// The latest schema of `subject` (its `schema`, `id`, `schemaType`).
    pub async fn latest(&self, subject: &str) -> Option<serde_json::Value> {
        self.get(&format!("/subjects/{subject}/versions/latest")).await
    }

    /// Whether `schema` (of `kind`: `AVRO` or `JSON`) is compatible with
    /// the latest version of `subject` under the registry's rule.
    pub async fn compatible(&self, subject: &str, kind: &str, schema: &str) -> bool {
        let mut body = serde_json::json!({ "schema": schema });
        if kind != "AVRO" {
            body["schemaType"] = kind.into();
        }
        let resp = Self::http()
            .post(format!("{}/compatibility/subjects/{subject}/versions/latest", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST /compatibility");
        let v: serde_json::Value = resp.json().await.expect("a compatibility answer");
        v["is_compatible"] == true
    }

    /// Sets `subject`'s compatibility rule (`BACKWARD`, `NONE`, ...).
    pub async fn set_compatibility(&self, subject: &str, rule: &str) {
        let resp = Self::http()
            .put(format!("{}/config/{subject}", self.url))
            .json(&serde_json::json!({ "compatibility": rule }))
            .send()
            .await
            .expect("PUT /config/subject");
        assert!(resp.status().is_success(), "PUT /config/{subject}: {}", resp.status());
    }

    /// Registers `schema` under `subject`: its id.
    pub async fn register(&self, subject: &str, kind: &str, schema: &str) -> u32 {
        let mut body = serde_json::json!({ "schema": schema });
        if kind != "AVRO" {
            body["schemaType"] = kind.into();
        }
        let resp = Self::http()
            .post(format!("{}/subjects/{subject}/versions", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST /subjects");
        assert!(
            resp.status().is_success(),
            "register under {subject}: {}",
            resp.status()
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        v["id"].as_u64().unwrap() as u32
    }

    /// The registered subjects (the registry answers `null` when none).
    pub async fn subjects(&self) -> Vec<String> {
        self.get("/subjects")
            .await
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }

    /// SIGSTOP: it accepts connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for SchemaRegistry {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/py/<script>` with `args` (the venv of `scripts/py-venv.sh`)
/// against `registry` and the test broker; returns its output.
fn python(script: &str, registry: &SchemaRegistry, args: &[&str]) -> std::process::Output {
    let venv = Command::new(root().join("scripts/py-venv.sh"))
        .output()
        .expect("scripts/py-venv.sh");
    assert!(
        venv.status.success(),
        "py-venv: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();
    let out = Command::new(python)
        .arg(root().join("tests/py").join(script))
        .args(["--registry", &registry.url, "--brokers", &kafka::bootstrap()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run tests/py/{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads `count` records of `topic` with Confluent's deserializers
/// (`format`: `avro` or `json`, `tests/py/registry_consume.py`): each as
/// `{"schema_id", "value", "headers"}`.
pub fn python_consume(registry: &SchemaRegistry, topic: &str, format: &str, count: usize) -> Vec<serde_json::Value> {
    let count = count.to_string();
    let out = python(
        "registry_consume.py",
        registry,
        &["--topic", topic, "--format", format, "--count", &count],
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("registry_consume.py prints JSON lines"))
        .collect()
}

/// Runs `tests/py/registry_produce.py` with `args`; returns its standard
/// output and the schema id it used.
pub fn python_produce(registry: &SchemaRegistry, args: &[&str]) -> (String, u32) {
    let out = python("registry_produce.py", registry, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    let id = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("schema_id="))
        .and_then(|n| n.parse().ok())
        .expect("registry_produce.py prints the schema id");
    (String::from_utf8(out.stdout).unwrap(), id)
}

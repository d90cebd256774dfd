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

/// Runs `tests/py/registry_produce.py` with `args` (the venv of
/// `scripts/py-venv.sh`); returns its standard output and the schema id it
/// used.
pub fn python_produce(registry: &SchemaRegistry, args: &[&str]) -> (String, u32) {
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
        .arg(root().join("tests/py/registry_produce.py"))
        .args(["--registry", &registry.url, "--brokers", &kafka::bootstrap()])
        .args(args)
        .output()
        .expect("run tests/py/registry_produce.py");
    assert!(
        out.status.success(),
        "registry_produce.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    let id = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("schema_id="))
        .and_then(|n| n.parse().ok())
        .expect("registry_produce.py prints the schema id");
    (String::from_utf8(out.stdout).unwrap(), id)
}

//! A faithful HTTP simulator of Crustdata's asynchronous batch reverse-identify
//! API (`POST /batch/person/identify`, `GET /batch/{id}`, `GET /batch`), with
//! S3-style pre-signed result downloads, webhooks, a credit ledger, limits and
//! on-demand fault injection. Start one in-process with [`SimHandle::start`]
//! or run the `crustdata-sim` binary. See its README.

mod admin;
mod api;
pub mod config;
pub mod directory;
mod errors;
mod files;
mod foreign;
mod jobs;
mod server;
mod stats;
mod timing;
pub mod validate;
mod view;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{split_keys, ConfigPatch, JobTimeModel, SimConfig, Variants, API_VERSION};
pub use directory::{Directory, MatchType};
pub use errors::{ApiError, S3Error};
pub use stats::SimStats;
pub use timing::needs_retrieval;
pub use webhook::{webhook_signature, SIGNATURE_HEADER};

use server::Shared;

/// A running simulator. Dropping it stops the background tasks; prefer
/// [`SimHandle::shutdown`] to wait for them.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

impl SimHandle {
    /// Binds `config.listen` (port 0 allowed) and serves in background tasks.
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        let directory = match &config.directory {
            Some(path) => Directory::load(path)?,
            None => Directory::default(),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, keys = config.api_keys.len(), known_people = directory.len(), "crustdata simulator listening");
        let shared = Arc::new(Shared::new(config, directory, format!("http://{addr}"))?);
        let (stop, rx) = watch::channel(false);
        let app = server::router(shared.clone());
        let mut server_rx = rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_rx.changed().await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        let sweeper = tokio::spawn(server::sweeper(shared.clone(), rx));
        Ok(SimHandle {
            addr,
            shared,
            stop,
            server,
            sweeper,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` of the bound address.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.store.lock().expect("store lock").stats.clone()
    }

    /// When each finished job was active: (seconds since `since` it was
    /// submitted, seconds it was active), for plots of the API's busy slots.
    pub fn job_intervals(&self, since: std::time::Instant) -> Vec<(f64, f64)> {
        let store = self.shared.store.lock().expect("store lock");
        store
            .intervals()
            .into_iter()
            .map(|(at, d)| (at.saturating_duration_since(since).as_secs_f64(), d.as_secs_f64()))
            .collect()
    }

    /// Changes keys, limits, latency or faults at runtime. Latency knobs apply
    /// to jobs submitted afterwards; a changed `credit_balance` resets what
    /// every key has spent.
    pub fn update(&self, f: impl FnOnce(&mut SimConfig)) {
        self.shared.update(f);
    }

    /// Creates a job of `key` as another client sharing the key would (like
    /// `POST /_sim/jobs`): business emails, finishing `duration` after now
    /// (not scaled by `latency_scale`), without rate limits, credit checks or
    /// faults. It is otherwise a normal job of the key: it holds one of the
    /// key's active-job slots, is listed, can be polled with the key, has
    /// result files and is billed (in `credits_charged` and
    /// `foreign_credits_charged`). Counted in `foreign_jobs`, not in
    /// `submits_accepted`. Returns its batch id.
    pub fn foreign_job(&self, key: &str, identifiers: Vec<String>, duration: Duration) -> String {
        self.foreign_job_of(key, MatchType::BusinessEmail, identifiers, duration)
    }

    /// [`SimHandle::foreign_job`] with identifiers of the given kind.
    pub fn foreign_job_of(&self, key: &str, kind: MatchType, identifiers: Vec<String>, duration: Duration) -> String {
        foreign::create(
            &self.shared,
            key,
            kind,
            foreign::Identifiers::Given(identifiers),
            duration,
        )
    }

    /// Zeroes the counters and identifier history (like `POST /_sim/reset-stats`).
    pub fn reset_stats(&self) {
        self.shared.store.lock().expect("store lock").reset_stats();
    }

    /// Stops serving and waits (at most 3 s) for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.sweeper.await;
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(3), &mut server).await.is_err() {
            server.abort();
        }
        tracing::info!(addr = %self.addr, "crustdata simulator stopped");
    }
}

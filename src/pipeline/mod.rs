//! Pipeline: wires source -> dispatch -> jobs -> sink, the HTTP server and
//! the API-key probe, and runs the shutdown sequence: stop consuming, let
//! running jobs publish within `shutdown.timeout`, flush the producer,
//! commit what is safe, leave the group.

pub mod dispatch;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::api::{ApiClient, ApiError, ErrorClass};
use crate::config::Config;
use crate::decode::Decoder;
use crate::jobs::JobContext;
use crate::metrics::Metrics;
use crate::server::{self, Health, ServerState};
use crate::sink::{Fatal, Sink, SinkError};
use crate::source::offsets::OffsetTracker;
use crate::source::{self, SourceControl, SourceParts};
use dispatch::{Dispatcher, Stopped};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The API client could not be built.
    #[error("API client: {0}")]
    Api(#[from] ApiError),
    /// The producer could not be built.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The consumer could not be built.
    #[error("consumer: {0}")]
    Source(#[from] rdkafka::error::KafkaError),
    /// The HTTP server could not bind.
    #[error("HTTP server on {listen}: {source}")]
    Server {
        /// The address.
        listen: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A stage failed while running; nothing after its records was committed.
    #[error("pipeline failed: {0}")]
    Failed(String),
}

/// Handles a running pipeline exposes (for tests and the binary).
pub struct Running {
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Health flags.
    pub health: Arc<Health>,
    done: oneshot::Receiver<Result<(), PipelineError>>,
}

impl Running {
    /// Waits for the pipeline to stop.
    pub async fn wait(self) -> Result<(), PipelineError> {
        self.done
            .await
            .unwrap_or_else(|_| Err(PipelineError::Failed("pipeline task vanished".into())))
    }
}

/// Starts the pipeline; it stops when `shutdown` resolves (or on a fatal error).
pub async fn start(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<Running, PipelineError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let fatal = Arc::new(Fatal::default());
    let wakers = Arc::new(Mutex::default());

    let api = Arc::new(ApiClient::new(&cfg.api, metrics.clone())?);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let webhook = (!cfg.webhook.public_url.is_empty()).then(|| {
        (
            format!("{}/webhooks/crustdata", cfg.webhook.public_url.trim_end_matches('/')),
            cfg.webhook.fallback_poll_interval,
        )
    });
    let ctx = Arc::new(JobContext {
        api: api.clone(),
        cfg: cfg.api.clone(),
        estimator: Mutex::default(),
        health: health.clone(),
        metrics: metrics.clone(),
        webhook,
        wakers: wakers.clone(),
        events: events_tx,
    });
    let sink = Arc::new(Sink::new(&cfg.kafka, tracker.clone(), metrics.clone(), fatal.clone())?);

    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let state = ServerState {
        metrics: metrics.clone(),
        health: health.clone(),
        wakers,
    };
    let (http_addr, server_task) = server::serve(&cfg.server.listen, state, async {
        let _ = server_stop_rx.await;
    })
    .await
    .map_err(|source| PipelineError::Server {
        listen: cfg.server.listen.clone(),
        source,
    })?;
    info!(%http_addr, "HTTP server listening");

    let (tx, rx) = mpsc::unbounded_channel();
    let control = Arc::new(SourceControl::default());
    let source_thread = source::spawn(SourceParts {
        cfg: cfg.kafka.clone(),
        decoder: Decoder::new(&cfg.input),
        tracker: tracker.clone(),
        sink: sink.clone(),
        tx,
        metrics: metrics.clone(),
        health: health.clone(),
        control: control.clone(),
    })?;

    let probe = tokio::spawn(probe_key(api, health.clone()));
    let dispatcher = Dispatcher::new(&cfg, ctx, sink.clone(), tracker, fatal.clone());
    let (done_tx, done_rx) = oneshot::channel();
    let grace = cfg.shutdown.timeout;
    let run_health = health.clone();
    tokio::spawn(async move {
        let stop_control = control.clone();
        let stop = async move {
            shutdown.await;
            info!("shutdown requested: no new records are taken");
            stop_control.stop_taking.store(true, Ordering::Relaxed);
        };
        let outcome = dispatcher.run(rx, events_rx, stop, grace).await;
        control.stop_taking.store(true, Ordering::Relaxed);
        probe.abort();
        // Everything handed to the producer gets acknowledged (or not) now.
        let flush_sink = sink.clone();
        let flushed = tokio::task::spawn_blocking(move || flush_sink.flush(Duration::from_secs(30))).await;
        if !matches!(flushed, Ok(Ok(()))) {
            warn!(
                pending = sink.pending(),
                "producer flush incomplete; unacknowledged records stay uncommitted"
            );
        }
        control.close.store(true, Ordering::Relaxed);
        let source_result = tokio::task::spawn_blocking(move || source_thread.join())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|_| "consumer thread panicked".to_string()))
            .and_then(|r| r);
        let result = match (outcome, source_result, fatal.get()) {
            (_, _, Some(f)) => Err(PipelineError::Failed(f)),
            (Err(e), _, _) => Err(PipelineError::Failed(e)),
            (Ok(_), Err(e), _) => Err(PipelineError::Failed(format!("consumer: {e}"))),
            (Ok(Stopped::SourceClosed), Ok(()), _) => {
                Err(PipelineError::Failed("consumer stopped unexpectedly".into()))
            }
            (Ok(Stopped::Shutdown), Ok(()), _) => Ok(()),
        };
        match &result {
            Ok(()) => info!("pipeline stopped cleanly"),
            Err(e) => {
                run_health.set_failed();
                error!(error = %e, "pipeline stopped with an error");
            }
        }
        let _ = server_stop_tx.send(());
        let _ = server_task.await;
        let _ = done_tx.send(result);
    });
    Ok(Running {
        http_addr,
        metrics,
        health,
        done: done_rx,
    })
}

/// Confirms the key at start-up so readiness does not wait for traffic;
/// retries (slowly while the key is refused) until the API accepts it.
async fn probe_key(api: Arc<ApiClient>, health: Arc<Health>) {
    let mut wait = Duration::from_secs(1);
    loop {
        if health.api_ok() {
            return;
        }
        match api.probe().await {
            Ok(()) => {
                health.set_api_refused(false);
                info!("the API accepts the key");
                return;
            }
            Err(e) if e.class() == ErrorClass::Auth => {
                health.set_api_refused(true);
                warn!(error = %e, "the API refuses the key; the service stays unready");
            }
            Err(e) => warn!(error = %e, "API key probe failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

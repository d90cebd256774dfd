//! HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness),
//! `/readyz` (readiness: consumer in its group and API key accepted) and
//! `POST /webhooks/crustdata/{token}` (job-completion callbacks).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::jobs::WakeRegistry;
use crate::metrics::Metrics;

/// Largest webhook body accepted; the body is not used.
pub const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;

/// Liveness and readiness flags, set by the pipeline.
#[derive(Debug, Default)]
pub struct Health {
    joined: AtomicBool,
    api_accepted: AtomicBool,
    api_refused: AtomicBool,
    failed: AtomicBool,
}

impl Health {
    /// The consumer has (or no longer has) an assignment in its group.
    pub fn set_joined(&self, v: bool) {
        self.joined.store(v, Ordering::Relaxed);
    }
    /// The API refused (true) or accepted (false) the key.
    pub fn set_api_refused(&self, refused: bool) {
        self.api_refused.store(refused, Ordering::Relaxed);
        if !refused {
            self.api_accepted.store(true, Ordering::Relaxed);
        }
    }
    /// The API currently refuses the key.
    pub fn api_refused(&self) -> bool {
        self.api_refused.load(Ordering::Relaxed)
    }
    /// The API has accepted the key at least once and does not refuse it now.
    pub fn api_ok(&self) -> bool {
        self.api_accepted.load(Ordering::Relaxed) && !self.api_refused()
    }
    /// A pipeline task died: liveness fails so the pod restarts.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
    /// Liveness.
    pub fn live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }
    /// Readiness.
    pub fn ready(&self) -> bool {
        self.live() && self.joined.load(Ordering::Relaxed) && self.api_ok()
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct ServerState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Health flags.
    pub health: Arc<Health>,
    /// Live webhook tokens.
    pub wakers: Arc<WakeRegistry>,
}

/// The router.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/webhooks/crustdata/{token}",
            post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .with_state(state)
}

/// Binds `listen` and serves until `shutdown` resolves; returns the bound
/// address through `bound`.
pub async fn serve(
    listen: &str,
    state: ServerState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((addr, handle))
}

async fn metrics(State(s): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<ServerState>) -> impl IntoResponse {
    if s.health.live() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a pipeline task failed")
    }
}

async fn readyz(State(s): State<ServerState>) -> impl IntoResponse {
    let h = &s.health;
    if h.ready() {
        (StatusCode::OK, "ready".to_string())
    } else {
        let why = if !h.live() {
            "a pipeline task failed"
        } else if h.api_refused() {
            "the API refuses the key"
        } else if !h.api_ok() {
            "the API key is not yet confirmed"
        } else {
            "the consumer has not joined its group"
        };
        (StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    }
}

/// Finds a live token by constant-time comparison against each one.
pub fn find_token(registry: &WakeRegistry, token: &str) -> Option<Arc<tokio::sync::Notify>> {
    let map = registry.lock().expect("wakers");
    let mut found = None;
    for (t, n) in map.iter() {
        if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
            found = Some(n.clone());
        }
    }
    found
}

async fn webhook(State(s): State<ServerState>, Path(token): Path<String>, _body: axum::body::Bytes) -> StatusCode {
    match find_token(&s.wakers, &token) {
        Some(n) => {
            s.metrics.webhook_callback(true);
            n.notify_one();
            StatusCode::NO_CONTENT
        }
        None => {
            s.metrics.webhook_callback(false);
            StatusCode::NOT_FOUND
        }
    }
}

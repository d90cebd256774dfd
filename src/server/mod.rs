//! HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness),
//! `/readyz` (readiness: consumer in its group and API key accepted) and
//! `POST /webhooks/crustdata/{token}` (job-completion callbacks).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::wake::WakeRegistry;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

/// Largest webhook body accepted; the body is not used.
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;

/// What the handlers need.
#[derive(Clone)]
pub(crate) struct ServerState {
    /// Metrics to render.
    pub(crate) metrics: Arc<Metrics>,
    /// Health flags.
    pub(crate) health: Arc<Health>,
    /// Live webhook tokens.
    pub(crate) wakers: Arc<WakeRegistry>,
}

/// The router.
pub(crate) fn router(state: ServerState) -> Router {
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
pub(crate) async fn serve(
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
    match s.health.unready() {
        None => (StatusCode::OK, "ready".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn webhook(State(s): State<ServerState>, Path(token): Path<String>, _body: axum::body::Bytes) -> StatusCode {
    match s.wakers.find(&token) {
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

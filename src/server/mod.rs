//! HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness),
//! `/readyz` (readiness, with the reason when not ready) and
//! `POST /webhooks/crustdata/{token}` (job-completion callbacks). The
//! connections themselves (timeouts, graceful shutdown) are [`conn`]'s.

mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::wake::WakeRegistry;

/// Largest webhook body accepted; the body is not used.
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;
/// How long a webhook request (its body included) may take.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

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
            post(webhook)
                .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
                .layer(axum::middleware::from_fn(within_timeout)),
        )
        .with_state(state)
}

/// A request trickling its body for longer than [`WEBHOOK_TIMEOUT`] is
/// answered 408 and its connection closed.
async fn within_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(WEBHOOK_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "request timeout",
        )
            .into_response(),
    }
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
    let handle = tokio::spawn(conn::serve(
        listener,
        router(state),
        shutdown,
        conn::HEADER_READ_TIMEOUT,
    ));
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

//! HTTP server: `/metrics` (Prometheus text), `/healthz` (liveness),
//! `/readyz` (readiness, with the reason when not ready) and
//! `POST /webhooks/crustdata/{token}` (job-completion callbacks). The
//! connections themselves (timeouts, graceful shutdown) are [`conn`]'s.

mod conn;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::wake::WakeRegistry;

/// Largest webhook body accepted; the body is not used.
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 64 * 1024;
/// How long a webhook request (its body included) may take.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Webhook requests looked at per second (a burst of twice that): the
/// API's callbacks come at the rate jobs end, a few a second; a flood of
/// guessed tokens is answered 429 without a look (its callbacks then wait
/// for the fallback poll).
pub(crate) const WEBHOOKS_PER_SECOND: u32 = 50;

/// The webhook endpoint's request-rate limiter.
pub(crate) fn webhook_limiter() -> Arc<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(WEBHOOKS_PER_SECOND).expect("nonzero");
    let burst = NonZeroU32::new(WEBHOOKS_PER_SECOND * 2).expect("nonzero");
    Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)))
}

/// What the handlers need.
#[derive(Clone)]
pub(crate) struct ServerState {
    /// Metrics to render.
    pub(crate) metrics: Arc<Metrics>,
    /// Health flags.
    pub(crate) health: Arc<Health>,
    /// Live webhook tokens.
    pub(crate) wakers: Arc<WakeRegistry>,
    /// Webhook requests looked at.
    pub(crate) webhook_rate: Arc<DefaultDirectRateLimiter>,
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
    if s.webhook_rate.check().is_err() {
        s.metrics.webhook_throttled();
        return StatusCode::TOO_MANY_REQUESTS;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_guessed_tokens_is_throttled_and_callbacks_work_again_after_it() {
        let wakers = Arc::new(WakeRegistry::default());
        let state = ServerState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            wakers: wakers.clone(),
            webhook_rate: webhook_limiter(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve("127.0.0.1:0", state.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let (token, wake) = wakers.register();
        let client = reqwest::Client::new();
        let post = |t: String| client.post(format!("http://{addr}/webhooks/crustdata/{t}")).send();
        let mut statuses = Vec::new();
        for i in 0..(WEBHOOKS_PER_SECOND * 3) {
            statuses.push(post(format!("{i:032x}")).await.unwrap().status().as_u16());
        }
        let throttled = statuses.iter().filter(|s| **s == 429).count();
        assert!(throttled > 0, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == 404 || *s == 429));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(post(token).await.unwrap().status().as_u16(), 204);
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("the job was woken");
        let text = state.metrics.render();
        assert!(
            text.contains(r#"identify_webhook_callbacks_total{result="throttled"}"#),
            "{text}"
        );
        let _ = stop.send(());
        let _ = task.await;
    }
}

//! Shared simulator state ([`Shared`]), the HTTP router, API-key
//! authentication and the background sweeper that completes jobs on time,
//! bills them, fires webhooks and forgets old jobs.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::config::SimConfig;
use super::directory::Directory;
use super::errors::ApiError;
use super::files::{self, Links};
use super::jobs::Store;
use super::{admin, api, foreign, webhook};

/// State shared by every handler and background task.
#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<Arc<SimConfig>>,
    /// Jobs, counters and the seeded RNG.
    pub store: Mutex<Store>,
    /// Known people from `--directory`.
    pub directory: Directory,
    /// Signer of download links.
    pub links: Links,
    /// Client used for webhooks.
    pub http: reqwest::Client,
    /// `http://ADDR` of the bound listener.
    pub bound_base: String,
}

impl Shared {
    /// Builds the state; `bound_base` is the listener's `http://ADDR`.
    pub fn new(config: SimConfig, directory: Directory, bound_base: String) -> anyhow::Result<Shared> {
        let http = reqwest::Client::builder()
            .user_agent("crustdata-sim-webhook/1")
            .build()?;
        Ok(Shared {
            store: Mutex::new(Store::new(config.seed)),
            config: RwLock::new(Arc::new(config)),
            directory,
            links: Links::new(),
            http,
            bound_base,
        })
    }

    /// The current configuration (cheap snapshot).
    pub fn config(&self) -> Arc<SimConfig> {
        self.config.read().expect("config lock").clone()
    }

    /// Changes the configuration. A changed `credit_balance` gives every key
    /// that balance afresh.
    pub fn update(&self, f: impl FnOnce(&mut SimConfig)) {
        let mut guard = self.config.write().expect("config lock");
        let mut next = SimConfig::clone(&guard);
        f(&mut next);
        if next.credit_balance != guard.credit_balance {
            self.store.lock().expect("store lock").reset_credits();
        }
        *guard = Arc::new(next);
    }

    /// Base of absolute download URLs: `public_url` or the bound address.
    pub fn public_base(&self, cfg: &SimConfig) -> String {
        match &cfg.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => self.bound_base.clone(),
        }
    }

    /// Checks `Authorization: Bearer <key>` (or legacy `Token <key>`).
    pub fn authenticate(&self, headers: &HeaderMap, cfg: &SimConfig) -> Result<Arc<str>, ApiError> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                let ok = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
                ok.then(|| rest.trim())
            })
            .filter(|k| !k.is_empty());
        let Some(given) = given else {
            return Err(ApiError::Unauthorized);
        };
        let mut found = None;
        for key in &cfg.api_keys {
            if bool::from(key.as_bytes().ct_eq(given.as_bytes())) {
                found = Some(key);
            }
        }
        found.map(|k| Arc::from(k.as_str())).ok_or(ApiError::Unauthorized)
    }
}

/// The simulator's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let latency = axum::middleware::from_fn_with_state(shared.clone(), answer_latency);
    Router::new()
        .route("/batch/person/identify", post(api::submit))
        .route("/batch", get(api::list))
        .route("/batch/{batch_id}", get(api::poll))
        .route("/_files/{batch_id}/{name}", get(files::download))
        .route("/_sim/stats", get(admin::stats))
        .route("/_sim/config", post(admin::config))
        .route("/_sim/reset-stats", post(admin::reset_stats))
        .route("/_sim/jobs", post(foreign::post))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(latency)
        .with_state(shared)
}

/// Delays every answer by `request_latency_min..=request_latency_max`,
/// after its request was handled (the `/_sim` endpoints excepted).
async fn answer_latency(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let admin = req.uri().path().starts_with("/_sim/");
    let resp = next.run(req).await;
    let cfg = shared.config();
    let (lo, hi) = (cfg.request_latency_min, cfg.request_latency_max);
    if !admin && hi > std::time::Duration::ZERO {
        let wait = shared.store.lock().expect("store lock").uniform(lo, hi);
        tokio::time::sleep(wait).await;
    }
    resp
}

/// Completes due jobs (and calls back those that started processing, with
/// `webhook_on_processing`) every `sweep_interval` until `shutdown` fires.
pub(crate) async fn sweeper(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let cfg = shared.config();
        let sleep = tokio::time::sleep(cfg.sweep_interval.max(std::time::Duration::from_millis(1)));
        tokio::select! {
            _ = sleep => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        let (started, finished) = {
            let mut store = shared.store.lock().expect("store lock");
            let started = store.processing_started(now);
            let finished = store.finish_due(now, &cfg);
            store.forget_old(now, cfg.job_retention);
            (started, finished)
        };
        webhook::dispatch(&shared, started);
        webhook::dispatch(&shared, finished);
    }
}

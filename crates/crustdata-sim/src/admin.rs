//! Admin endpoints (no auth): `GET /_sim/stats`, `POST /_sim/config` (a
//! [`ConfigPatch`] of runtime knobs) and `POST /_sim/reset-stats`
//! (`POST /_sim/jobs`, other clients' jobs, lives in `foreign`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::config::ConfigPatch;
use super::errors::ApiError;
use super::server::Shared;
use super::stats::SimStats;

/// `GET /_sim/stats`.
pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<SimStats> {
    Json(shared.store.lock().expect("store lock").stats.clone())
}

/// `POST /_sim/config`: applies a JSON patch; unknown fields or bad values -> 400.
pub(crate) async fn config(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let patch: ConfigPatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("invalid config patch: {e}"), json!({})))?;
    patch.validate().map_err(|m| ApiError::invalid(m, json!({})))?;
    shared.update(|cfg| patch.apply(cfg));
    tracing::info!("configuration updated via /_sim/config");
    Ok(Json(json!({ "ok": true })))
}

/// `POST /_sim/reset-stats`: zeroes counters and identifier history.
pub(crate) async fn reset_stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.store.lock().expect("store lock").reset_stats();
    Json(json!({ "ok": true }))
}

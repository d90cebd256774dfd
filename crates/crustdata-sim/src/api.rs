//! The vendor API handlers: `POST /batch/person/identify` (submit),
//! `GET /batch/{batch_id}` (poll) and `GET /batch` (list), plus the 404
//! fallback. Each authenticates, applies rate limits and injected faults,
//! among them the lost answers of accepted submits (504, cut, slow).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::config::SimConfig;
use super::errors::ApiError;
use super::jobs::{Endpoint, NewJob};
use super::server::Shared;
use super::validate::parse_submit;
use super::view::{status_json, submit_json};
use super::webhook;

/// What becomes of an accepted submit's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Answered at once.
    Normal,
    /// The connection is cut after a few bytes of the answer.
    Cut,
    /// Answered after `slow_response`.
    Slow,
}

/// Authenticates and applies the per-endpoint request-rate limit.
fn admit(shared: &Shared, cfg: &SimConfig, headers: &HeaderMap, ep: Endpoint) -> Result<Arc<str>, ApiError> {
    let key = match shared.authenticate(headers, cfg) {
        Ok(key) => key,
        Err(e) => {
            shared.store.lock().expect("store lock").stats.unauthorized_401 += 1;
            return Err(e);
        }
    };
    let mut store = shared.store.lock().expect("store lock");
    store.check_rate(&key, ep, cfg.requests_per_minute, Instant::now())?;
    Ok(key)
}

/// `POST /batch/person/identify`.
pub(crate) async fn submit(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let cfg = shared.config();
    match submit_inner(&shared, &cfg, &headers, &body) {
        Ok((v, key, answer)) => {
            if answer == Answer::Cut {
                return cut_answer(&v);
            }
            if answer == Answer::Slow {
                tokio::time::sleep(cfg.slow_response).await;
            }
            // The rate-limit headers on an accepted submit too: how many of
            // the key's active-job slots are left, and when the next frees.
            let (limit, remaining, reset) = shared
                .store
                .lock()
                .expect("store lock")
                .limits(&key, &cfg, Instant::now());
            let mut resp = (StatusCode::OK, Json(v)).into_response();
            let h = resp.headers_mut();
            h.insert("x-ratelimit-limit", limit.into());
            h.insert("x-ratelimit-remaining", remaining.into());
            h.insert("x-ratelimit-reset", reset.into());
            resp
        }
        Err(ApiError::GatewayTimeout) => ApiError::GatewayTimeout.into_response(),
        Err(e) => {
            let status = e.status().as_u16();
            {
                let mut store = shared.store.lock().expect("store lock");
                let s = &mut store.stats;
                s.submits_rejected_total += 1;
                match status {
                    400 => s.submits_rejected_400 += 1,
                    401 => s.submits_rejected_401 += 1,
                    402 => s.submits_rejected_402 += 1,
                    429 => s.submits_rejected_429 += 1,
                    500..=599 => s.submits_rejected_500 += 1,
                    _ => s.submits_rejected_other += 1,
                }
            }
            tracing::debug!(status, error = %e, "submit rejected");
            e.into_response()
        }
    }
}

/// A 200 whose body breaks off after a few bytes: hyper then aborts the
/// connection, and the client sees a transport error, not an answer.
fn cut_answer(v: &Value) -> Response {
    let full = v.to_string();
    let head = Bytes::copy_from_slice(&full.as_bytes()[..full.len().min(8)]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection cut (injected)",
        )),
    ];
    let mut resp = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    resp
}

fn submit_inner(
    shared: &Arc<Shared>,
    cfg: &SimConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Arc<str>, Answer), ApiError> {
    let key = admit(shared, cfg, headers, Endpoint::Submit)?;
    let version = headers.get("x-api-version").and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some(cfg.api_version.as_str()) {
        return Err(ApiError::invalid(
            format!("header x-api-version: {} is required", cfg.api_version),
            json!({ "header": "x-api-version", "expected": cfg.api_version, "got": version }),
        ));
    }
    if cfg.refuse_submits_status != 0 {
        return Err(ApiError::Refused {
            status: cfg.refuse_submits_status,
            message: cfg.refuse_submits_message.clone(),
        });
    }
    let req = parse_submit(body, cfg.max_identifiers)?;

    let new = NewJob::prepare(&shared.directory, cfg, req.kind, req.identifiers, req.webhook_url);
    let (result, finished) = shared
        .store
        .lock()
        .expect("store lock")
        .submit(&key, new, cfg, Instant::now());
    webhook::dispatch(shared, finished);
    let job = result?;
    let answer = {
        let mut store = shared.store.lock().expect("store lock");
        if store.chance(cfg.lost_response_rate) {
            store.stats.submit_answers_lost += 1;
            tracing::debug!(batch_id = %job.id, "accepted submit answered 504 (lost answer)");
            return Err(ApiError::GatewayTimeout);
        }
        if store.chance(cfg.cut_response_rate) {
            store.stats.submit_answers_lost += 1;
            store.stats.submit_answers_cut += 1;
            tracing::debug!(batch_id = %job.id, "accepted submit's connection cut (lost answer)");
            Answer::Cut
        } else if store.chance(cfg.slow_response_rate) {
            store.stats.submit_answers_lost += 1;
            store.stats.submit_answers_slow += 1;
            tracing::debug!(batch_id = %job.id, delay = ?cfg.slow_response, "accepted submit answered late");
            Answer::Slow
        } else {
            Answer::Normal
        }
    };
    tracing::debug!(batch_id = %job.id, identifiers = job.identifiers.len(), "job accepted");
    Ok((submit_json(&job, cfg), key, answer))
}

/// Draws an injected 500 with probability `rate`.
fn inject_500(shared: &Shared, rate: f64) -> Result<(), ApiError> {
    let mut store = shared.store.lock().expect("store lock");
    if store.chance(rate) {
        store.stats.injected_500s += 1;
        return Err(ApiError::Internal);
    }
    Ok(())
}

/// `GET /batch/{batch_id}`.
pub(crate) async fn poll(
    State(shared): State<Arc<Shared>>,
    Path(batch_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let cfg = shared.config();
    let key = admit(&shared, &cfg, &headers, Endpoint::Poll)?;
    inject_500(&shared, cfg.error_rate_poll)?;
    let now = Instant::now();
    let not_found = || ApiError::NotFound(format!("batch job {batch_id} not found"));
    let (job, finished) = match Uuid::parse_str(&batch_id) {
        Ok(id) => shared.store.lock().expect("store lock").poll(&key, id, now, &cfg),
        Err(_) => (None, None),
    };
    webhook::dispatch(&shared, finished.into_iter().collect());
    let mut store = shared.store.lock().expect("store lock");
    let Some(job) = job else {
        store.stats.polls_not_found += 1;
        return Err(not_found());
    };
    store.stats.polls += 1;
    drop(store);
    Ok(Json(status_json(&shared, &cfg, &job, now)))
}

/// Statuses accepted by the list filter.
const STATUSES: [&str; 4] = ["pending", "processing", "completed", "failed"];

/// `GET /batch?limit=&status=&cursor=`: newest first, `limit` 1..=100 (default 20).
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let cfg = shared.config();
    let key = admit(&shared, &cfg, &headers, Endpoint::List)?;
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit must be an integer between 1 and 100",
                    json!({ "param": "limit" }),
                ))
            }
        },
    };
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(s) if STATUSES.contains(&s) => Some(s),
        Some(_) => {
            return Err(ApiError::invalid(
                "status must be one of pending, processing, completed, failed",
                json!({ "param": "status", "allowed": STATUSES }),
            ))
        }
    };
    let cursor = match query.get("cursor").map(String::as_str) {
        None | Some("") => None,
        Some(raw) => Some(
            raw.parse::<u64>()
                .map_err(|_| ApiError::invalid("cursor is not a valid cursor", json!({ "param": "cursor" })))?,
        ),
    };
    inject_500(&shared, cfg.error_rate_list)?;
    let now = Instant::now();
    let (jobs, has_more) = {
        let mut store = shared.store.lock().expect("store lock");
        store.stats.lists += 1;
        store.list(&key, status, cursor, limit, now)
    };
    let next_cursor = if has_more {
        jobs.last().map(|j| j.seq.to_string())
    } else {
        None
    };
    let views: Vec<Value> = jobs.iter().map(|j| status_json(&shared, &cfg, j, now)).collect();
    Ok(Json(
        json!({ "jobs": views, "next_cursor": next_cursor, "has_more": has_more }),
    ))
}

/// Any other path: 404 in the vendor's error shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_string())
}

/// A known path with the wrong method: 405 in the vendor's error shape.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

//! Other clients' jobs on the same key (a foreign tool sharing the API key):
//! [`create`], behind `SimHandle::foreign_job` and the admin endpoint
//! `POST /_sim/jobs` (`{"key", "identifiers" | "count", "duration",
//! "identifier_type"}` -> `{"batch_id"}`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::JsonDuration;
use super::directory::MatchType;
use super::errors::ApiError;
use super::jobs::NewJob;
use super::server::Shared;

/// A foreign job's identifiers: given, or generated.
#[derive(Debug, Clone)]
pub(crate) enum Identifiers {
    /// These values.
    Given(Vec<String>),
    /// `count` generated values (`foreign-<n>-<i>@other-tool.example`).
    Count(usize),
}

/// The `i`-th generated identifier of foreign job `n`.
fn generated(kind: MatchType, n: u64, i: usize) -> String {
    match kind {
        MatchType::BusinessEmail => format!("foreign-{n}-{i}@other-tool.example"),
        MatchType::ProfileUrl => format!("https://www.linkedin.com/in/foreign-{n}-{i}-other-tool-example"),
    }
}

/// Creates a job of `key` as another client of that key would, with the
/// given (unscaled) `duration`, bypassing rate limits, credits and faults.
/// Returns its batch id.
pub(crate) fn create(
    shared: &Shared,
    key: &str,
    kind: MatchType,
    identifiers: Identifiers,
    duration: Duration,
) -> String {
    let cfg = shared.config();
    let number = shared.store.lock().expect("store lock").next_foreign_number();
    let identifiers = match identifiers {
        Identifiers::Given(ids) => ids,
        Identifiers::Count(n) => (0..n).map(|i| generated(kind, number, i)).collect(),
    };
    let new = NewJob::prepare(&shared.directory, &cfg, kind, identifiers, None);
    let key: Arc<str> = Arc::from(key);
    let job = shared
        .store
        .lock()
        .expect("store lock")
        .create_foreign(&key, new, duration, &cfg, Instant::now());
    tracing::debug!(batch_id = %job.id, identifiers = job.identifiers.len(), ?duration, "foreign job created");
    job.id.to_string()
}

/// The body of `POST /_sim/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignJobRequest {
    key: String,
    identifiers: Option<Vec<String>>,
    count: Option<usize>,
    duration: JsonDuration,
    identifier_type: Option<String>,
}

/// `POST /_sim/jobs`: creates a foreign job; bad bodies -> 400.
pub(crate) async fn post(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let bad = |m: String| ApiError::invalid(m, json!({}));
    let req: ForeignJobRequest = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid foreign job: {e}")))?;
    if req.key.trim().is_empty() {
        return Err(bad("key must be a non-empty string".to_string()));
    }
    let kind = match req.identifier_type.as_deref() {
        None | Some("business_email") => MatchType::BusinessEmail,
        Some("professional_network_profile_url") => MatchType::ProfileUrl,
        Some(other) => {
            return Err(bad(format!(
                "identifier_type must be business_email or professional_network_profile_url, got {other:?}"
            )))
        }
    };
    let max = shared.config().max_identifiers;
    let identifiers = match (req.identifiers, req.count) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > max || ids.iter().any(|i| i.trim().is_empty()) {
                return Err(bad(format!("identifiers must hold 1..={max} non-blank strings")));
            }
            Identifiers::Given(ids)
        }
        (None, Some(n)) if (1..=max).contains(&n) => Identifiers::Count(n),
        (None, Some(n)) => return Err(bad(format!("count must be within 1..={max}, got {n}"))),
        _ => return Err(bad("exactly one of identifiers and count is required".to_string())),
    };
    let batch_id = create(&shared, &req.key, kind, identifiers, req.duration.0);
    Ok(Json(json!({ "batch_id": batch_id })))
}

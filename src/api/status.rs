//! Job views, as `GET /batch/{batch_id}` and the items of `GET /batch`
//! report them: the job's state from its status word, the result links,
//! the failure message and the server's timestamps.
//!
//! Read leniently: unknown fields are ignored, a field of an unexpected
//! type (a numeric `created_at`, a string `result_count`) is read if it can
//! be and ignored if not; only a missing status word makes a view unusable.
//! An unknown status word is judged by what it looks like (`*fail*`,
//! `*error*`, `cancel*`, `expired`, `rejected`, `aborted` are terminal,
//! `*complete*`, `succeeded`, `done`, `finished` completed, anything else
//! still running) and flagged, so that it is counted.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::error::ApiError;

/// A job's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// `pending`, `processing` or any state not known to be final.
    Running,
    /// `completed`: results can be downloaded.
    Completed,
    /// `failed` (or another terminal failure word).
    Failed,
}

/// What the connector reads of a job.
#[derive(Debug, Clone)]
pub(crate) struct JobStatus {
    /// The API's id, when the view carries it.
    pub(crate) batch_id: Option<String>,
    /// State.
    pub(crate) state: JobState,
    /// The status word was not one the API documents.
    pub(crate) unknown_word: bool,
    /// Identifiers submitted, when reported.
    pub(crate) identifier_count: Option<u64>,
    /// Number of matched identifiers, when completed.
    pub(crate) result_count: Option<u64>,
    /// Result file parts (preferred) ...
    pub(crate) download_urls: Vec<String>,
    /// ... or the single result file.
    pub(crate) download_url: Option<String>,
    /// Why a failed job failed.
    pub(crate) error_message: Option<String>,
    /// When the API accepted it.
    pub(crate) created_at: Option<DateTime<Utc>>,
    /// `completed_at - created_at`, when the API reports both.
    pub(crate) server_duration: Option<Duration>,
}

/// The documented status words.
const KNOWN: [&str; 4] = ["pending", "processing", "completed", "failed"];

/// Maps a status word to a state (see the module header).
pub(crate) fn job_state(status: &str) -> JobState {
    let w = status.trim().to_ascii_lowercase();
    let terminal = w.contains("fail")
        || w.contains("error")
        || w.starts_with("cancel")
        || matches!(w.as_str(), "expired" | "rejected" | "aborted");
    if terminal {
        JobState::Failed
    } else if w.contains("complete") || matches!(w.as_str(), "succeeded" | "success" | "done" | "finished") {
        JobState::Completed
    } else {
        JobState::Running
    }
}

/// A string, or a number as text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A count: a non-negative integer, or one as a string.
fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A time: RFC 3339 (or without an offset, as UTC), or a Unix time in
/// seconds or (above 10^11) milliseconds, as a number or a string.
fn time(v: &Value) -> Option<DateTime<Utc>> {
    let from_number = |x: f64| {
        let ms = if x > 1e11 { x } else { x * 1000.0 };
        Utc.timestamp_millis_opt(ms as i64).single()
    };
    match v {
        Value::Number(n) => n.as_f64().and_then(from_number),
        Value::String(s) => {
            let s = s.trim();
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .ok()
                        .map(|t| t.and_utc())
                })
                .or_else(|| s.parse::<f64>().ok().and_then(from_number))
        }
        _ => None,
    }
}

/// The failure message: `error_message`, or `error` (a string, or an
/// object with a `message`).
fn error_message(obj: &serde_json::Map<String, Value>) -> Option<String> {
    if let Some(m) = obj.get("error_message").and_then(text) {
        return Some(m);
    }
    match obj.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("message")
            .and_then(text)
            .or_else(|| Some(Value::Object(o.clone()).to_string())),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads a job object.
pub(crate) fn job_view(v: &Value) -> Result<JobStatus, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::Malformed("a job view that is not an object".into()))?;
    let word = obj
        .get("status")
        .or_else(|| obj.get("state"))
        .and_then(text)
        .ok_or_else(|| ApiError::Malformed("a job view without a status".into()))?;
    let string = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let urls = match obj.get("download_urls") {
        Some(Value::Array(a)) => a.iter().filter_map(string).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    };
    let created_at = obj.get("created_at").and_then(time);
    let completed_at = obj.get("completed_at").and_then(time);
    let server_duration = match (created_at, completed_at) {
        (Some(a), Some(b)) => (b - a).to_std().ok(),
        _ => None,
    };
    Ok(JobStatus {
        batch_id: obj.get("batch_id").or_else(|| obj.get("id")).and_then(text),
        state: job_state(&word),
        unknown_word: !KNOWN.contains(&word.to_ascii_lowercase().as_str()),
        identifier_count: obj
            .get("identifier_count")
            .or_else(|| obj.get("entities_requested"))
            .and_then(count),
        result_count: obj.get("result_count").and_then(count),
        download_urls: urls,
        download_url: obj.get("download_url").and_then(string),
        error_message: error_message(obj),
        created_at,
        server_duration,
    })
}

/// Parses a status response body.
pub(crate) fn parse_status(body: &[u8]) -> Result<JobStatus, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("status body: {e}")))?;
    // Some APIs wrap the object: {"data": {...}} or {"job": {...}}.
    let inner = ["data", "job", "batch"]
        .iter()
        .find_map(|k| v.get(k).filter(|x| x.is_object()));
    match inner {
        Some(i) if v.get("status").is_none() => job_view(i),
        _ => job_view(&v),
    }
}

/// One page of `GET /batch`.
#[derive(Debug, Default)]
pub(crate) struct JobPage {
    /// The jobs that could be read (newest first, as the API lists them).
    pub(crate) jobs: Vec<JobStatus>,
    /// Where the next page starts, if there is one.
    pub(crate) next_cursor: Option<String>,
    /// Items that could not be read (skipped).
    pub(crate) unreadable: usize,
}

/// Parses a list response: `{jobs, next_cursor, has_more}` (or the items
/// under `data`, `items`, `batches`, or a bare array). Items that cannot be
/// read are skipped; without `has_more`, a cursor means more.
pub(crate) fn parse_list(body: &[u8]) -> Result<JobPage, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("list body: {e}")))?;
    let items = match &v {
        Value::Array(a) => Some(a),
        Value::Object(o) => ["jobs", "data", "items", "batches", "results"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array)),
        _ => None,
    }
    .ok_or_else(|| ApiError::Malformed("list body without a list of jobs".into()))?;
    let jobs: Vec<JobStatus> = items.iter().filter_map(|j| job_view(j).ok()).collect();
    let unreadable = items.len() - jobs.len();
    let cursor = v.get("next_cursor").or_else(|| v.get("cursor")).and_then(text);
    let more = v.get("has_more").and_then(Value::as_bool).unwrap_or(cursor.is_some());
    Ok(JobPage {
        jobs,
        next_cursor: cursor.filter(|_| more),
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words() {
        for (w, s) in [
            ("pending", JobState::Running),
            ("processing", JobState::Running),
            ("queued", JobState::Running),
            ("in_progress", JobState::Running),
            ("COMPLETED", JobState::Completed),
            ("partially_completed", JobState::Completed),
            ("succeeded", JobState::Completed),
            ("failed", JobState::Failed),
            ("job_failed", JobState::Failed),
            ("internal_error", JobState::Failed),
            ("cancelled", JobState::Failed),
            ("canceled_by_user", JobState::Failed),
            ("expired", JobState::Failed),
        ] {
            assert_eq!(job_state(w), s, "{w}");
        }
    }

    #[test]
    fn status_body_variants() {
        let s = parse_status(br#"{"batch_id":"x","status":"completed","result_count":0,"download_url":"https://a/b"}"#)
            .unwrap();
        assert_eq!(s.state, JobState::Completed);
        assert_eq!(s.result_count, Some(0));
        assert!(s.download_urls.is_empty());
        assert_eq!(s.server_duration, None);
        assert!(!s.unknown_word);
        let timed = parse_status(
            br#"{"status":"completed","created_at":"2026-06-12T12:23:03.945900+00:00","completed_at":"2026-06-12T12:23:15.993293+00:00"}"#,
        )
        .unwrap();
        assert_eq!(timed.server_duration, Some(Duration::from_micros(12_047_393)));
        let f = parse_status(br#"{"status":"failed","error":{"message":"boom"}}"#).unwrap();
        assert_eq!(f.state, JobState::Failed);
        assert!(f.error_message.unwrap().contains("boom"));
        assert!(parse_status(b"{}").is_err());
        assert!(parse_status(b"not json").is_err());
    }

    #[test]
    fn fields_of_unexpected_types_are_read_or_ignored() {
        let s = parse_status(
            br#"{"status":"Completed","created_at":1765000000,"completed_at":"1765000012.5","result_count":"12",
                 "identifier_count":300.0,"download_urls":["https://a/1", 7, null],"error":null,"extra":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!(s.state, JobState::Completed);
        assert_eq!(s.result_count, Some(12));
        assert_eq!(s.identifier_count, Some(300));
        assert_eq!(s.download_urls, ["https://a/1"]);
        assert_eq!(s.server_duration, Some(Duration::from_millis(12_500)));
        assert!(s.error_message.is_none());
        let odd =
            parse_status(br#"{"status":"paused","created_at":{"t":1},"result_count":-3,"download_url":12}"#).unwrap();
        assert_eq!(odd.state, JobState::Running);
        assert!(odd.unknown_word);
        assert_eq!(odd.created_at, None);
        assert_eq!(odd.result_count, None);
        let ms = parse_status(br#"{"status":"pending","created_at":1765000000123}"#).unwrap();
        assert_eq!(ms.created_at.unwrap().timestamp_millis(), 1_765_000_000_123);
        let naive = parse_status(br#"{"status":"pending","created_at":"2026-06-12T12:23:03.9459"}"#).unwrap();
        assert!(naive.created_at.is_some());
        let wrapped = parse_status(br#"{"data":{"batch_id":"b","status":"processing"}}"#).unwrap();
        assert_eq!(wrapped.batch_id.as_deref(), Some("b"));
    }

    #[test]
    fn list_variants() {
        let p = parse_list(
            br#"{"jobs":[{"batch_id":"a","status":"completed","identifier_count":3},{"nope":1},
                 {"id":42,"status":"processing"}],"next_cursor":"c1","has_more":true}"#,
        )
        .unwrap();
        assert_eq!(p.jobs.len(), 2, "an unreadable item is skipped");
        assert_eq!(p.jobs[1].batch_id.as_deref(), Some("42"));
        assert_eq!(p.next_cursor.as_deref(), Some("c1"));
        let last = parse_list(br#"{"jobs":[],"next_cursor":"c2","has_more":false}"#).unwrap();
        assert_eq!(last.next_cursor, None);
        let bare = parse_list(br#"[{"batch_id":"x","status":"pending"}]"#).unwrap();
        assert_eq!(bare.jobs.len(), 1);
        assert_eq!(bare.next_cursor, None, "no cursor, no more");
        let data = parse_list(br#"{"data":[{"batch_id":"x","status":"pending"}],"cursor":7}"#).unwrap();
        assert_eq!(data.next_cursor.as_deref(), Some("7"));
        assert!(parse_list(br#"{"total":0}"#).is_err());
    }
}

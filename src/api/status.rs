//! The status response (`GET /batch/{batch_id}`): the job's state from its
//! status word, the result links, the failure message and the server's own
//! timestamps.

use std::time::Duration;

use serde::Deserialize;

use super::error::ApiError;

/// A job's state as the status endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// `pending`, `processing` or any state not known to be final.
    Running,
    /// `completed`: results can be downloaded.
    Completed,
    /// `failed` (or another terminal failure word).
    Failed,
}

/// The parts of `GET /batch/{id}` the connector uses.
#[derive(Debug, Clone)]
pub(crate) struct JobStatus {
    /// State.
    pub(crate) state: JobState,
    /// Number of matched identifiers, when completed.
    pub(crate) result_count: Option<u64>,
    /// Result file parts (preferred) ...
    pub(crate) download_urls: Vec<String>,
    /// ... or the single result file.
    pub(crate) download_url: Option<String>,
    /// Why a failed job failed.
    pub(crate) error_message: Option<String>,
    /// `completed_at - created_at`, when the API reports both.
    pub(crate) server_duration: Option<Duration>,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    result_count: Option<u64>,
    #[serde(default)]
    download_urls: Option<Vec<String>>,
    #[serde(default)]
    download_url: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
}

/// Maps a status word to a state; unknown words count as still running.
pub(crate) fn job_state(status: &str) -> JobState {
    match status.trim().to_ascii_lowercase().as_str() {
        "completed" | "complete" | "succeeded" | "success" | "done" | "finished" => JobState::Completed,
        "failed" | "failure" | "error" | "errored" | "cancelled" | "canceled" | "expired" => JobState::Failed,
        _ => JobState::Running,
    }
}

/// Parses a status response body.
pub(crate) fn parse_status(body: &[u8]) -> Result<JobStatus, ApiError> {
    let raw: RawStatus = serde_json::from_slice(body).map_err(|e| ApiError::Malformed(format!("status body: {e}")))?;
    let status = raw
        .status
        .ok_or_else(|| ApiError::Malformed("status body has no status".into()))?;
    let error_message = raw.error_message.or_else(|| {
        raw.error.map(|e| match e {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    });
    let ts = |t: &Option<String>| t.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let server_duration = match (ts(&raw.created_at), ts(&raw.completed_at)) {
        (Some(a), Some(b)) => (b - a).to_std().ok(),
        _ => None,
    };
    Ok(JobStatus {
        server_duration,
        state: job_state(&status),
        result_count: raw.result_count,
        download_urls: raw.download_urls.unwrap_or_default(),
        download_url: raw.download_url,
        error_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words() {
        assert_eq!(job_state("pending"), JobState::Running);
        assert_eq!(job_state("processing"), JobState::Running);
        assert_eq!(job_state("queued"), JobState::Running);
        assert_eq!(job_state("COMPLETED"), JobState::Completed);
        assert_eq!(job_state("failed"), JobState::Failed);
    }

    #[test]
    fn status_body_variants() {
        let s = parse_status(br#"{"batch_id":"x","status":"completed","result_count":0,"download_url":"https://a/b"}"#)
            .unwrap();
        assert_eq!(s.state, JobState::Completed);
        assert_eq!(s.result_count, Some(0));
        assert!(s.download_urls.is_empty());
        assert_eq!(s.server_duration, None);
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
}

//! The Crustdata batch identify API client: one method per request (submit,
//! status, download), each passing the request-rate limiter, each a single
//! attempt with a timeout. Retry policy lives in [`retry`]; what an error
//! means lives in [`error`].

pub mod error;
pub mod retry;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use url::Url;

pub use error::{ApiError, ErrorClass};

use crate::config::{ApiConfig, Secret};
use crate::decode::IdentifierType;
use crate::metrics::Metrics;

/// The API version this client speaks.
pub const API_VERSION: &str = "2025-11-01";

/// A job's state as the status endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `pending`, `processing` or any state not known to be final.
    Running,
    /// `completed`: results can be downloaded.
    Completed,
    /// `failed` (or another terminal failure word).
    Failed,
}

/// The parts of `GET /batch/{id}` the connector uses.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// State.
    pub state: JobState,
    /// The raw status word.
    pub status: String,
    /// Number of matched identifiers, when completed.
    pub result_count: Option<u64>,
    /// Result file parts (preferred) ...
    pub download_urls: Vec<String>,
    /// ... or the single result file.
    pub download_url: Option<String>,
    /// Why a failed job failed.
    pub error_message: Option<String>,
    /// `completed_at - created_at`, when the API reports both.
    pub server_duration: Option<Duration>,
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
pub fn job_state(status: &str) -> JobState {
    match status.trim().to_ascii_lowercase().as_str() {
        "completed" | "complete" | "succeeded" | "success" | "done" | "finished" => JobState::Completed,
        "failed" | "failure" | "error" | "errored" | "cancelled" | "canceled" | "expired" => JobState::Failed,
        _ => JobState::Running,
    }
}

/// Parses a status response body.
pub fn parse_status(body: &[u8]) -> Result<JobStatus, ApiError> {
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
        status,
        result_count: raw.result_count,
        download_urls: raw.download_urls.unwrap_or_default(),
        download_url: raw.download_url,
        error_message,
    })
}

/// Which hosts result files may come from.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    allowed: Vec<String>,
    allow_http: bool,
}

impl DownloadPolicy {
    /// The policy for a config: the allowlist (default: the API host and
    /// `*.amazonaws.com`); plain http only when `base_url` is http.
    pub fn new(cfg: &ApiConfig, base: &Url) -> Self {
        let allowed = if cfg.download_allowed_hosts.is_empty() {
            vec![
                base.host_str().unwrap_or_default().to_ascii_lowercase(),
                "*.amazonaws.com".into(),
            ]
        } else {
            cfg.download_allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        Self {
            allowed,
            allow_http: base.scheme() == "http",
        }
    }

    /// Checks a URL; the error names the host, never the query (which holds
    /// the pre-signed credentials).
    pub fn check(&self, url: &str) -> Result<Url, ApiError> {
        let u = Url::parse(url).map_err(|_| ApiError::RefusedUrl("not an absolute URL".into()))?;
        let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(ApiError::RefusedUrl(format!("scheme {other} on host {host}"))),
        }
        let ok = self.allowed.iter().any(|a| match a.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => host == *a,
        });
        if ok {
            Ok(u)
        } else {
            Err(ApiError::RefusedUrl(format!(
                "host {host} is not in api.download_allowed_hosts"
            )))
        }
    }
}

/// Client for the batch identify API.
pub struct ApiClient {
    http: reqwest::Client,
    files: reqwest::Client,
    base: Url,
    key: Secret,
    limiter: DefaultDirectRateLimiter,
    policy: DownloadPolicy,
    max_bytes: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("key", &self.key)
            .finish()
    }
}

impl ApiClient {
    /// Builds a client from `[api]`.
    pub fn new(cfg: &ApiConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
        let base = Url::parse(&cfg.base_url).map_err(|e| ApiError::Malformed(format!("api.base_url: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", cfg.key.expose()))
            .map_err(|_| ApiError::Malformed("api.key contains characters not allowed in a header".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("x-api-version", HeaderValue::from_static(API_VERSION));
        let build = |headers: HeaderMap, redirect: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .default_headers(headers)
                .timeout(cfg.request_timeout)
                .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
                .redirect(redirect)
                .user_agent(concat!("identify-connector/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ApiError::Transport(e.to_string()))
        };
        let rpm = NonZeroU32::new(cfg.requests_per_minute.max(1)).expect("nonzero");
        Ok(Self {
            http: build(headers, reqwest::redirect::Policy::limited(3))?,
            // Result files are fetched without the Authorization header (S3
            // refuses it), without automatic decompression, and without
            // following redirects (a redirect could leave the allowlist).
            files: build(HeaderMap::new(), reqwest::redirect::Policy::none())?,
            policy: DownloadPolicy::new(cfg, &base),
            base,
            key: cfg.key.clone(),
            limiter: RateLimiter::direct(
                Quota::per_minute(rpm).allow_burst(NonZeroU32::new(rpm.get().clamp(1, 10)).expect("nonzero")),
            ),
            max_bytes: cfg.max_result_bytes,
            metrics,
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a path joins a valid base URL")
    }

    async fn send(&self, endpoint: &'static str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        self.limiter.until_ready().await;
        let started = Instant::now();
        let result = req.send().await;
        let elapsed = started.elapsed();
        match result {
            Ok(resp) => {
                self.metrics.api_request(endpoint, resp.status().as_u16(), elapsed);
                if resp.status().is_success() {
                    Ok(resp)
                } else {
                    let status = resp.status().as_u16();
                    let h = resp.headers();
                    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let wait = error::parse_retry_after(
                        header("x-ratelimit-reset").as_deref(),
                        header("retry-after").as_deref(),
                        now,
                    );
                    let body = resp.text().await.unwrap_or_default();
                    Err(ApiError::from_status(status, wait, &body))
                }
            }
            Err(e) => {
                self.metrics.api_request(endpoint, 0, elapsed);
                Err(ApiError::from_reqwest(e))
            }
        }
    }

    /// `POST /batch/person/identify`; returns the new job's `batch_id`.
    pub async fn submit(
        &self,
        kind: IdentifierType,
        ids: &[String],
        webhook_url: Option<&str>,
    ) -> Result<String, ApiError> {
        let mut body = serde_json::Map::new();
        body.insert(kind.request_field().into(), serde_json::json!(ids));
        if let Some(url) = webhook_url {
            body.insert("webhook_url".into(), url.into());
        }
        let req = self
            .http
            .post(self.url("/batch/person/identify"))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("JSON of strings"));
        let resp = self.send("submit", req).await?;
        let bytes = resp.bytes().await.map_err(ApiError::from_reqwest)?;
        #[derive(Deserialize)]
        struct Submitted {
            #[serde(alias = "id")]
            batch_id: Option<serde_json::Value>,
        }
        let s: Submitted =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(format!("submit body: {e}")))?;
        match s.batch_id {
            Some(serde_json::Value::String(id)) if !id.trim().is_empty() => Ok(id),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(ApiError::Malformed("submit response has no batch_id".into())),
        }
    }

    /// `GET /batch/{batch_id}`.
    pub async fn status(&self, batch_id: &str) -> Result<JobStatus, ApiError> {
        let mut url = self.url("/batch/");
        url.path_segments_mut().expect("http URL").pop_if_empty().push(batch_id);
        let resp = self.send("status", self.http.get(url)).await?;
        let bytes = resp.bytes().await.map_err(ApiError::from_reqwest)?;
        parse_status(&bytes)
    }

    /// Checks that the API accepts the key (`GET /batch?limit=1`): any answer
    /// but 401, 402 or 403 counts as accepted.
    pub async fn probe(&self) -> Result<(), ApiError> {
        let url = self.url("/batch?limit=1");
        match self.send("list", self.http.get(url)).await {
            Ok(_) => Ok(()),
            Err(e) if e.class() == ErrorClass::Auth => Err(e),
            Err(ApiError::BadRequest(_) | ApiError::NotFound(_) | ApiError::Unexpected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Downloads one result file (no Authorization header), at most
    /// `api.max_result_bytes`.
    pub async fn download(&self, url: &str) -> Result<Bytes, ApiError> {
        let url = self.policy.check(url)?;
        self.limiter.until_ready().await;
        let started = Instant::now();
        let resp = self.files.get(url).send().await.map_err(|e| {
            self.metrics.api_request("download", 0, started.elapsed());
            ApiError::from_reqwest(e)
        })?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            self.metrics.api_request("download", status, started.elapsed());
            let body = resp.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            return Err(match status {
                403 => ApiError::LinkExpired(excerpt),
                404 => ApiError::NotFound(excerpt),
                408 | 429 | 500..=599 => ApiError::from_status(status, None, &body),
                _ => ApiError::Unexpected {
                    status,
                    message: excerpt,
                },
            });
        }
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            self.metrics.api_request("download", status, started.elapsed());
            return Err(ApiError::TooLarge(self.max_bytes));
        }
        let mut buf = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                self.metrics.api_request("download", 0, started.elapsed());
                ApiError::from_reqwest(e)
            })?;
            if (buf.len() + chunk.len()) as u64 > self.max_bytes {
                self.metrics.api_request("download", status, started.elapsed());
                return Err(ApiError::TooLarge(self.max_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        self.metrics.api_request("download", status, started.elapsed());
        Ok(buf.freeze())
    }

    /// Largest decompressed result accepted.
    pub fn max_result_bytes(&self) -> u64 {
        self.max_bytes
    }
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

    fn policy(base: &str, hosts: &[&str]) -> DownloadPolicy {
        let cfg = ApiConfig {
            base_url: base.into(),
            download_allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..ApiConfig::default()
        };
        DownloadPolicy::new(&cfg, &Url::parse(base).unwrap())
    }

    #[test]
    fn download_allowlist() {
        let p = policy("https://api.crustdata.com", &[]);
        assert!(p.check("https://bucket.s3.amazonaws.com/x.gz?sig=1").is_ok());
        assert!(p.check("https://api.crustdata.com/files/x").is_ok());
        assert!(p.check("http://bucket.s3.amazonaws.com/x.gz").is_err());
        assert!(p.check("https://evil.com/x").is_err());
        assert!(p.check("https://amazonaws.com.evil.com/x").is_err());
        assert!(p.check("https://evilamazonaws.com/x").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        let local = policy("http://127.0.0.1:9000", &[]);
        assert!(local.check("http://127.0.0.1:9000/_files/a").is_ok());
        assert!(local.check("http://169.254.169.254/latest").is_err());
        let custom = policy("https://api.crustdata.com", &["files.example.com"]);
        assert!(custom.check("https://files.example.com/a").is_ok());
        assert!(custom.check("https://bucket.s3.amazonaws.com/a").is_err());
        let err = p.check("https://evil.com/x?X-Amz-Signature=secret").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}

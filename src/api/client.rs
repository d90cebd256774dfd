//! The HTTP client: one method per request (submit, status, probe,
//! download), each API request passing its endpoint's part of the key's
//! request budget (split among the pods sharing the key by their share of
//! its slots), each a single attempt with a timeout. Retries are the
//! caller's (see [`super::retry`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use url::Url;

use super::allowlist::DownloadPolicy;
use super::error::{self, ApiError, ErrorClass};
use super::status::{parse_list, parse_status, JobPage, JobStatus};
use super::API_VERSION;
use crate::config::{ApiConfig, Secret};
use crate::metrics::Metrics;
use crate::model::IdentifierType;

/// Largest API response body read (submit, status, list); a job view is a
/// few KiB, a page of 100 jobs a few hundred.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Largest error body read (its message is kept, the rest dropped).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// Reads at most `limit` bytes of the body of `resp`; true when there was more.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<(Bytes, bool), ApiError> {
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::from_reqwest)?;
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf.freeze(), true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), false))
}

/// A success body, refused above [`MAX_RESPONSE_BYTES`].
async fn read_body(resp: reqwest::Response) -> Result<Bytes, ApiError> {
    match read_limited(resp, MAX_RESPONSE_BYTES).await? {
        (b, false) => Ok(b),
        (_, true) => Err(ApiError::Malformed(format!(
            "a response body above {MAX_RESPONSE_BYTES} bytes"
        ))),
    }
}

/// An error body's text, cut at [`MAX_ERROR_BYTES`].
async fn error_text(resp: reqwest::Response) -> String {
    match read_limited(resp, MAX_ERROR_BYTES).await {
        Ok((b, _)) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    }
}

/// The API's endpoints, as metric labels and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /batch/person/identify`
    Submit,
    /// `GET /batch/{batch_id}`
    Status,
    /// `GET /batch`
    List,
    /// A result file behind a pre-signed link.
    Download,
}

impl Endpoint {
    /// Bounded label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Status => "status",
            Self::List => "list",
            Self::Download => "download",
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An accepted submit.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    /// The new job.
    pub(crate) batch_id: String,
    /// `x-ratelimit-remaining`: the key's active-job slots left.
    pub(crate) remaining: Option<u32>,
}

/// Cells of the limiters per request of a pod that has all of the key's
/// slots: a pod with a part of them pays more cells per request.
const CELLS: u32 = 10;

/// The key's request budget: `api.requests_per_minute` for each of the
/// API's endpoints (submit, status, list; its limits are per endpoint),
/// split among the pods that share the key by their share of its
/// active-job slots (requests follow jobs). Result files come from the
/// storage behind pre-signed links, not the API: they take nothing.
struct Budget {
    /// One limiter per API endpoint: submit, status, list.
    endpoints: [DefaultDirectRateLimiter; 3],
    /// Cells one request of this pod takes.
    cost: std::sync::atomic::AtomicU32,
}

impl Budget {
    fn new(rpm: NonZeroU32) -> Self {
        // A burst of a tenth of a minute's budget (at least one request, at
        // most 64), in cells.
        let quota = || {
            let per_minute = rpm.get();
            let cells = NonZeroU32::new(per_minute * CELLS).expect("nonzero");
            let burst = NonZeroU32::new((per_minute / 10).clamp(1, 64) * CELLS).expect("nonzero");
            Quota::per_minute(cells).allow_burst(burst)
        };
        Self {
            endpoints: std::array::from_fn(|_| RateLimiter::direct(quota())),
            cost: std::sync::atomic::AtomicU32::new(CELLS),
        }
    }

    /// This pod may use `share` of the key's `slots` (at least one's worth).
    fn set_share(&self, share: usize, slots: usize) {
        let cost = (CELLS * slots.max(1) as u32).div_ceil(share.clamp(1, slots.max(1)) as u32);
        self.cost.store(cost, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits for one request's cells of `endpoint`'s budget.
    async fn take(&self, endpoint: Endpoint) {
        let limiter = match endpoint {
            Endpoint::Submit => &self.endpoints[0],
            Endpoint::Status => &self.endpoints[1],
            Endpoint::List => &self.endpoints[2],
            Endpoint::Download => return,
        };
        let n = NonZeroU32::new(self.cost.load(std::sync::atomic::Ordering::Relaxed).max(1)).expect("nonzero");
        let _ = limiter.until_n_ready(n).await;
    }
}

/// Client for the batch identify API.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    files: reqwest::Client,
    base: Url,
    key: Secret,
    /// The request budget: `api.requests_per_minute` of the key.
    budget: Budget,
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
    pub(crate) fn new(cfg: &ApiConfig, metrics: Arc<Metrics>) -> Result<Self, ApiError> {
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
            budget: Budget::new(rpm),
            max_bytes: cfg.max_result_bytes,
            metrics,
        })
    }

    /// `path` under the base URL, keeping the base's own path (a base URL
    /// behind a proxy may carry a prefix).
    fn url(&self, path: &str) -> Url {
        api_url(&self.base, path)
    }

    /// Resolves relative result links against the base URL.
    fn absolute_links(&self, status: &mut JobStatus) {
        let resolve = |u: &mut String| {
            if matches!(Url::parse(u), Err(url::ParseError::RelativeUrlWithoutBase)) {
                if let Ok(abs) = self.base.join(u) {
                    *u = abs.to_string();
                }
            }
        };
        status.download_urls.iter_mut().for_each(resolve);
        if let Some(u) = status.download_url.as_mut() {
            resolve(u);
        }
    }

    async fn send(&self, endpoint: Endpoint, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        self.budget.take(endpoint).await;
        self.send_now(endpoint, req).await
    }

    /// Waits until the submit budget lets one request go (for
    /// [`Self::submit`], which does not wait again).
    pub(crate) async fn ready(&self) {
        self.budget.take(Endpoint::Submit).await;
    }

    /// This pod's share of the key's `slots`, and so of its request budget.
    pub(crate) fn share_budget(&self, share: usize, slots: usize) {
        self.budget.set_share(share, slots);
    }

    /// Sends `req` at once (its permit already taken).
    async fn send_now(&self, endpoint: Endpoint, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let started = Instant::now();
        let result = req.send().await;
        let elapsed = started.elapsed();
        match result {
            Ok(resp) => {
                self.metrics
                    .api_request(endpoint.as_str(), resp.status().as_u16(), elapsed);
                if resp.status().is_success() {
                    Ok(resp)
                } else {
                    let status = resp.status().as_u16();
                    let h = resp.headers();
                    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let wait = error::parse_retry_after(
                        header("x-ratelimit-reset").as_deref(),
                        header("retry-after").as_deref(),
                        unix_now(),
                    );
                    let body = error_text(resp).await;
                    Err(ApiError::from_status(status, wait, &body))
                }
            }
            Err(e) => {
                self.metrics.api_request(endpoint.as_str(), 0, elapsed);
                Err(ApiError::from_reqwest(e))
            }
        }
    }

    /// `POST /batch/person/identify`; returns the new job's `batch_id` and
    /// what the rate-limit headers said. Sent at once: the caller took its
    /// permit from the rate limiter ([`Self::ready`]) before it wrote the
    /// submit ahead, so that the request leaves right after that record.
    pub(crate) async fn submit(
        &self,
        kind: IdentifierType,
        ids: &[String],
        webhook_url: Option<&str>,
    ) -> Result<Submitted, ApiError> {
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
        let resp = self.send_now(Endpoint::Submit, req).await?;
        let h = resp.headers();
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
        let remaining = header("x-ratelimit-remaining")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|r| r as u32);
        let bytes = read_body(resp).await?;
        #[derive(Deserialize)]
        struct Body {
            #[serde(alias = "id")]
            batch_id: Option<serde_json::Value>,
        }
        let s: Body = serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed(format!("submit body: {e}")))?;
        let batch_id = match s.batch_id {
            Some(serde_json::Value::String(id)) if !id.trim().is_empty() => id,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(ApiError::Malformed("submit response has no batch_id".into())),
        };
        Ok(Submitted { batch_id, remaining })
    }

    /// `GET /batch/{batch_id}`.
    pub(crate) async fn status(&self, batch_id: &str) -> Result<JobStatus, ApiError> {
        let mut url = self.url("/batch/");
        url.path_segments_mut().expect("http URL").pop_if_empty().push(batch_id);
        let resp = self.send(Endpoint::Status, self.http.get(url)).await?;
        let bytes = read_body(resp).await?;
        let mut status = parse_status(&bytes)?;
        self.absolute_links(&mut status);
        Ok(status)
    }

    /// `GET /batch?limit=&cursor=`: one page of this key's jobs, newest first.
    pub(crate) async fn list(&self, limit: u32, cursor: Option<&str>) -> Result<JobPage, ApiError> {
        let mut url = self.url("/batch");
        url.query_pairs_mut().append_pair("limit", &limit.to_string());
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let resp = self.send(Endpoint::List, self.http.get(url)).await?;
        let bytes = read_body(resp).await?;
        let mut page = parse_list(&bytes)?;
        page.jobs.iter_mut().for_each(|j| self.absolute_links(j));
        Ok(page)
    }

    /// Checks that the API is where `api.base_url` says and accepts the key
    /// (`GET /batch?limit=1`): a 401, 402 or 403 refuses the key, a 404, 405
    /// or 415 says the URL is not the API's; any other answer counts as
    /// accepted.
    pub(crate) async fn probe(&self) -> Result<(), ApiError> {
        let mut url = self.url("/batch");
        url.set_query(Some("limit=1"));
        match self.send(Endpoint::List, self.http.get(url)).await {
            Ok(_) => Ok(()),
            Err(e) if e.class() == ErrorClass::Auth || misrouted(&e) => Err(e),
            Err(ApiError::BadRequest(_) | ApiError::Unexpected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Downloads one result file (no Authorization header), at most
    /// `api.max_result_bytes`.
    pub(crate) async fn download(&self, url: &str) -> Result<Bytes, ApiError> {
        let url = self.policy.check(url)?;
        let started = Instant::now();
        let record = |status: u16| {
            self.metrics
                .api_request(Endpoint::Download.as_str(), status, started.elapsed())
        };
        let resp = self.files.get(url).send().await.map_err(|e| {
            record(0);
            ApiError::from_reqwest(e)
        })?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            record(status);
            let body = error_text(resp).await;
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
            record(status);
            return Err(ApiError::TooLarge(self.max_bytes));
        }
        let mut buf = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                record(0);
                ApiError::from_reqwest(e)
            })?;
            if (buf.len() + chunk.len()) as u64 > self.max_bytes {
                record(status);
                return Err(ApiError::TooLarge(self.max_bytes));
            }
            buf.extend_from_slice(&chunk);
        }
        record(status);
        Ok(buf.freeze())
    }

    /// Largest decompressed result accepted.
    pub(crate) fn max_result_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// Whether an answer says the request went somewhere that is not the API
/// (a wrong `api.base_url`, a gateway in the way).
pub(crate) fn misrouted(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::NotFound(_) | ApiError::Unexpected { status: 405 | 415, .. }
    )
}

/// `path` (starting with `/`) under `base`, whose own path is kept as a prefix.
fn api_url(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let prefix = base.path().trim_end_matches('/');
    u.set_path(&format!("{prefix}{path}"));
    u.set_query(None);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_prefix_in_the_base_url_is_kept() {
        let at = |base: &str, path: &str| api_url(&Url::parse(base).unwrap(), path).to_string();
        assert_eq!(
            at("https://api.crustdata.com", "/batch"),
            "https://api.crustdata.com/batch"
        );
        assert_eq!(
            at("https://api.crustdata.com/", "/batch/"),
            "https://api.crustdata.com/batch/"
        );
        assert_eq!(
            at("https://gw.example/crustdata", "/batch"),
            "https://gw.example/crustdata/batch"
        );
        assert_eq!(
            at("https://gw.example/crustdata/", "/batch/person/identify"),
            "https://gw.example/crustdata/batch/person/identify"
        );
    }

    const KEY: &str = "unit-test-key-77";

    #[tokio::test]
    async fn the_key_never_shows_in_debug_or_errors() {
        let sim = crustdata_sim::SimHandle::start(crustdata_sim::SimConfig {
            api_keys: vec!["another-key".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let cfg = ApiConfig {
            base_url: sim.base_url(),
            key: Secret::new(KEY),
            ..ApiConfig::default()
        };
        let client = ApiClient::new(&cfg, Arc::new(Metrics::new())).unwrap();
        assert!(!format!("{client:?}").contains(KEY));
        let err = client.probe().await.unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        assert!(!format!("{err} {err:?}").contains(KEY));
        let bad = ApiConfig {
            key: Secret::new(format!("{KEY}\n")),
            ..cfg
        };
        let err = ApiClient::new(&bad, Arc::new(Metrics::new())).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(KEY), "{err}");
        sim.shutdown().await;
    }
}

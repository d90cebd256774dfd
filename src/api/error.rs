//! API errors and their classification: retryable (try the same request
//! again after a backoff), auth (stop submitting, stay unready, retry slowly)
//! or terminal for the request at hand.

use std::time::Duration;

/// An error from one API request. Messages never contain the API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 429: too many active jobs or requests. `retry_after` from
    /// `x-ratelimit-reset` or `Retry-After` when present.
    #[error("rate limited (429): {message}")]
    RateLimited {
        /// How long the API asked us to wait.
        retry_after: Option<Duration>,
        /// The API's message.
        message: String,
    },
    /// 5xx.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The request timed out.
    #[error("request timed out")]
    Timeout,
    /// Connecting failed: the request never left.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Transferring failed (the request may have reached the API).
    #[error("transport error: {0}")]
    Transport(String),
    /// 401: the key is wrong or missing.
    #[error("unauthorized (401): {0}")]
    Unauthorized(String),
    /// 402: out of credits.
    #[error("insufficient credits (402): {0}")]
    PaymentRequired(String),
    /// 403 from the API: permission denied (or insufficient credits).
    #[error("forbidden (403): {0}")]
    Forbidden(String),
    /// 400: the request was refused; the message says why.
    #[error("bad request (400): {0}")]
    BadRequest(String),
    /// 404: the job (or file) does not exist.
    #[error("not found (404): {0}")]
    NotFound(String),
    /// Any other unexpected status.
    #[error("unexpected status {status}: {message}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// Body excerpt.
        message: String,
    },
    /// The response body could not be understood.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A download URL failed the allowlist or scheme check; never fetched.
    #[error("refused download URL: {0}")]
    RefusedUrl(String),
    /// A download URL answered 403: expired or badly signed.
    #[error("download link refused (403): {0}")]
    LinkExpired(String),
    /// A download was larger than `api.max_result_bytes`.
    #[error("result file larger than {0} bytes")]
    TooLarge(u64),
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// Try the same request again after a backoff.
    Retryable,
    /// The key is refused: stop new work, mark unready, retry slowly.
    Auth,
    /// Retrying the same request cannot help.
    Terminal,
}

impl ApiError {
    /// Classifies the error (a pure decision, unit-tested).
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout | Self::Connect(_) | Self::Transport(_) => {
                ErrorClass::Retryable
            }
            Self::Unauthorized(_) | Self::PaymentRequired(_) | Self::Forbidden(_) => ErrorClass::Auth,
            Self::BadRequest(_)
            | Self::NotFound(_)
            | Self::Unexpected { .. }
            | Self::Malformed(_)
            | Self::RefusedUrl(_)
            | Self::LinkExpired(_)
            | Self::TooLarge(_) => ErrorClass::Terminal,
        }
    }

    /// The wait the API asked for, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Bounded label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Transport(_) => "transport",
            Self::Unauthorized(_) => "unauthorized",
            Self::PaymentRequired(_) => "payment_required",
            Self::Forbidden(_) => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unexpected { .. } => "unexpected",
            Self::Malformed(_) => "malformed",
            Self::RefusedUrl(_) => "refused_url",
            Self::LinkExpired(_) => "link_expired",
            Self::TooLarge(_) => "too_large",
        }
    }

    /// Builds the error for a non-success status and its body.
    pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, body: &str) -> Self {
        let message = error_message(body);
        match status {
            400 => Self::BadRequest(message),
            401 => Self::Unauthorized(message),
            402 => Self::PaymentRequired(message),
            403 => Self::Forbidden(message),
            404 => Self::NotFound(message),
            408 => Self::Timeout,
            429 => Self::RateLimited { retry_after, message },
            500..=599 => Self::Server { status, message },
            _ => Self::Unexpected { status, message },
        }
    }

    /// Maps a reqwest error without its URL's query (pre-signed URLs carry
    /// credentials in the query string).
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        let e = e.without_url();
        if e.is_connect() {
            Self::Connect(e.to_string())
        } else if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(e.to_string())
        }
    }
}

/// Extracts `error.message` from the vendor's error body, else a short
/// excerpt of the body.
pub(crate) fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    if let Ok(Outer { error }) = serde_json::from_str::<Outer>(body) {
        match (error.kind, error.message) {
            (Some(k), Some(m)) => return format!("{k}: {m}"),
            (None, Some(m)) => return m,
            (Some(k), None) => return k,
            (None, None) => {}
        }
    }
    let mut excerpt: String = body.chars().take(200).collect();
    if excerpt.is_empty() {
        excerpt = "(empty body)".into();
    }
    excerpt
}

/// Reads the wait a 429 asks for: `x-ratelimit-reset` (seconds, or a unix
/// timestamp when it is far larger than any sane wait), else `Retry-After`
/// (seconds). Capped at 15 minutes.
pub(crate) fn parse_retry_after(reset: Option<&str>, retry_after: Option<&str>, now_unix: u64) -> Option<Duration> {
    let secs = |v: &str| v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
    let from_reset = reset.and_then(secs).map(|s| {
        if s > 1_000_000_000.0 {
            (s - now_unix as f64).max(0.0)
        } else {
            s
        }
    });
    let wait = from_reset.or_else(|| retry_after.and_then(secs))?;
    Some(Duration::from_secs_f64(wait.min(900.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(ApiError::from_status(429, None, "").class(), ErrorClass::Retryable);
        assert_eq!(ApiError::from_status(500, None, "").class(), ErrorClass::Retryable);
        assert_eq!(ApiError::from_status(503, None, "").class(), ErrorClass::Retryable);
        assert_eq!(ApiError::from_status(408, None, "").class(), ErrorClass::Retryable);
        assert_eq!(ApiError::Timeout.class(), ErrorClass::Retryable);
        assert_eq!(ApiError::from_status(401, None, "").class(), ErrorClass::Auth);
        assert_eq!(ApiError::from_status(402, None, "").class(), ErrorClass::Auth);
        assert_eq!(ApiError::from_status(403, None, "").class(), ErrorClass::Auth);
        assert_eq!(ApiError::from_status(400, None, "").class(), ErrorClass::Terminal);
        assert_eq!(ApiError::from_status(404, None, "").class(), ErrorClass::Terminal);
        assert_eq!(ApiError::from_status(418, None, "").class(), ErrorClass::Terminal);
    }

    #[test]
    fn vendor_error_body_is_read() {
        let body = r#"{"error":{"type":"invalid_request","message":"too many values","metadata":{}}}"#;
        assert_eq!(error_message(body), "invalid_request: too many values");
        assert_eq!(error_message("<html>oops</html>"), "<html>oops</html>");
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn retry_after_sources() {
        assert_eq!(parse_retry_after(Some("3"), None, 0), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(None, Some("7"), 0), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(Some("2"), Some("7"), 0), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(Some("1700000010"), None, 1_700_000_000),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after(Some("99999"), None, 0),
            Some(Duration::from_secs(900))
        );
        assert_eq!(parse_retry_after(Some("soon"), None, 0), None);
        assert_eq!(parse_retry_after(Some("-1"), None, 0), None);
    }
}

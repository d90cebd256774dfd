//! Error responses: the vendor's JSON error body for API endpoints
//! ([`ApiError`]) and S3-style XML errors for result downloads ([`S3Error`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An API error, rendered as `{"error":{"type","message","metadata"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`.
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable reason.
        message: String,
        /// Details such as the offending field or index.
        metadata: Value,
    },
    /// 401 `unauthorized`.
    #[error("invalid or missing API key")]
    Unauthorized,
    /// 402 `insufficient_credits`.
    #[error("insufficient credits")]
    InsufficientCredits {
        /// Credits left for the key.
        remaining: u64,
    },
    /// 429 `rate_limited`, with `x-ratelimit-*` headers.
    #[error("{message}")]
    RateLimited {
        /// Human-readable reason.
        message: String,
        /// Value of `x-ratelimit-limit`.
        limit: u64,
        /// Value of `x-ratelimit-reset` (seconds, at least 1).
        reset_secs: u64,
    },
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 500 `internal_error` (injected fault).
    #[error("internal server error")]
    Internal,
    /// An injected refusal of every submit (`refuse_submits_status`).
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The message.
        message: String,
    },
    /// 504 from the gateway in front of the API (an injected lost answer).
    #[error("gateway timeout")]
    GatewayTimeout,
}

impl ApiError {
    /// Shorthand for a 400 with metadata.
    pub fn invalid(message: impl Into<String>, metadata: Value) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            metadata,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Refused { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InsufficientCredits { .. } => "insufficient_credits",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal => "internal_error",
            ApiError::GatewayTimeout => "gateway_timeout",
            ApiError::Refused { .. } => "invalid_request",
        }
    }

    fn metadata(&self) -> Value {
        match self {
            ApiError::InvalidRequest { metadata, .. } => metadata.clone(),
            ApiError::InsufficientCredits { remaining } => {
                json!({ "credits_remaining": remaining })
            }
            ApiError::RateLimited { limit, reset_secs, .. } => {
                json!({ "limit": limit, "remaining": 0, "reset": reset_secs })
            }
            _ => json!({}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "type": self.kind(),
                "message": self.to_string(),
                "metadata": self.metadata(),
            }
        });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if let ApiError::RateLimited { limit, reset_secs, .. } = &self {
            let h = resp.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from(*limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
            h.insert("x-ratelimit-reset", HeaderValue::from(*reset_secs));
        }
        resp
    }
}

/// An S3-style download error, rendered as `<Error><Code>..</Code><Message>..</Message></Error>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// 400: the request also carried an `Authorization` header.
    #[error("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified")]
    InvalidArgument,
    /// 403: the signature does not match.
    #[error("The request signature we calculated does not match the signature you provided. Check your key and signing method.")]
    SignatureDoesNotMatch,
    /// 403: the link expired.
    #[error("Request has expired")]
    Expired,
    /// 404: no such object.
    #[error("The specified key does not exist.")]
    NoSuchKey,
    /// 500: injected fault.
    #[error("We encountered an internal error. Please try again.")]
    InternalError,
}

impl S3Error {
    fn status_and_code(self) -> (StatusCode, &'static str) {
        match self {
            S3Error::InvalidArgument => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            S3Error::SignatureDoesNotMatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            S3Error::Expired => (StatusCode::FORBIDDEN, "AccessDenied"),
            S3Error::NoSuchKey => (StatusCode::NOT_FOUND, "NoSuchKey"),
            S3Error::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{self}</Message><RequestId>SIMULATED</RequestId></Error>"
        );
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))],
            body,
        )
            .into_response()
    }
}

//! The Crustdata batch identify API: the HTTP [`client`] (one method per
//! request, each a single attempt), the [`status`] response parser, the
//! download [`allowlist`], what an [`error`] means, and the [`retry`]
//! policy with the loop that applies it.

mod allowlist;
mod client;
mod error;
mod retry;
mod status;

pub(crate) use client::{misrouted, ApiClient, Endpoint};
pub use error::ApiError;
pub(crate) use error::ErrorClass;
pub(crate) use retry::{with_retries, Backoff, RetryHooks, RetryPolicy};
pub(crate) use status::{JobState, JobStatus};

/// The API version this client speaks.
pub(crate) const API_VERSION: &str = "2025-11-01";

//! Retry decisions: exponential backoff with jitter, and whether a failed
//! request is worth another attempt.

use std::time::Duration;

use super::error::{ApiError, ErrorClass};

/// Backoff settings for one kind of request.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait before the first retry.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1-based), "equal jitter":
    /// half the exponential step plus a random half. `unit` is a random
    /// number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then retry.
    RetryAfter(Duration),
    /// Give up on this request.
    GiveUp,
}

/// Decides whether to retry `err` after `attempt` attempts (1-based) out of
/// `max_attempts`. Rate limits are always retried (the API says when); auth
/// errors are left to the caller, which retries them slowly without bound.
pub fn decide(err: &ApiError, attempt: u32, max_attempts: u32, backoff: &Backoff, unit: f64) -> RetryDecision {
    match err.class() {
        ErrorClass::Retryable => {
            if let Some(wait) = err.retry_after() {
                // Never hammer: at least the base backoff, plus a little jitter.
                return RetryDecision::RetryAfter(wait.max(backoff.base) + backoff.base.mul_f64(unit));
            }
            if matches!(err, ApiError::RateLimited { .. }) {
                return RetryDecision::RetryAfter(backoff.delay(attempt, unit));
            }
            if attempt >= max_attempts {
                RetryDecision::GiveUp
            } else {
                RetryDecision::RetryAfter(backoff.delay(attempt, unit))
            }
        }
        ErrorClass::Auth | ErrorClass::Terminal => RetryDecision::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    #[test]
    fn exponential_with_bounded_jitter() {
        assert_eq!(B.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(B.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(B.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(B.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(B.delay(30, 1.0), Duration::from_secs(10));
        assert_eq!(B.delay(u32::MAX, 0.5), Duration::from_millis(7500));
    }

    #[test]
    fn retry_rules() {
        let server = ApiError::Server {
            status: 500,
            message: String::new(),
        };
        assert!(matches!(decide(&server, 1, 3, &B, 0.5), RetryDecision::RetryAfter(_)));
        assert_eq!(decide(&server, 3, 3, &B, 0.5), RetryDecision::GiveUp);
        let limited = ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(4)),
            message: String::new(),
        };
        assert_eq!(
            decide(&limited, 99, 3, &B, 0.5),
            RetryDecision::RetryAfter(Duration::from_millis(4050))
        );
        let limited_no_hint = ApiError::RateLimited {
            retry_after: None,
            message: String::new(),
        };
        assert!(matches!(
            decide(&limited_no_hint, 99, 3, &B, 0.5),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            decide(&ApiError::BadRequest(String::new()), 1, 3, &B, 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(&ApiError::Unauthorized(String::new()), 1, 3, &B, 0.5),
            RetryDecision::GiveUp
        );
    }
}

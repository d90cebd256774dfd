//! Retries: the policy (exponential backoff with jitter, and whether a
//! failed request is worth another attempt, both pure decisions) and, apart
//! from it, the loop that applies the policy to one request. The loop's
//! side effects (a refused key, a 429, a retry) go to the caller's
//! [`RetryHooks`].

use std::future::Future;
use std::time::Duration;

use super::client::Endpoint;
use super::error::{ApiError, ErrorClass};

/// Backoff settings for one kind of request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// Wait before the first retry.
    pub(crate) base: Duration,
    /// Longest wait.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1-based), "equal jitter":
    /// half the exponential step plus a random half. `unit` is a random
    /// number in `[0, 1)`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
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
pub(crate) enum RetryDecision {
    /// Wait this long, then retry.
    RetryAfter(Duration),
    /// Give up on this request.
    GiveUp,
}

/// Decides whether to retry `err` after `attempt` attempts (1-based) out of
/// `max_attempts`. Rate limits are always retried (the API says when); auth
/// errors are left to the caller, which retries them slowly without bound.
pub(crate) fn decide(err: &ApiError, attempt: u32, max_attempts: u32, backoff: &Backoff, unit: f64) -> RetryDecision {
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

/// How one request is retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Backoff of retryable errors (5xx, timeouts, transport, 429 without a hint).
    pub(crate) backoff: Backoff,
    /// Backoff while the key is refused (401, 402, 403): without bound.
    pub(crate) auth_backoff: Backoff,
    /// Attempts of a request failing with retryable errors.
    pub(crate) max_attempts: u32,
    /// A 403 ends the request (it concerns what was asked for, not the
    /// key); otherwise it counts as a refused key.
    pub(crate) forbidden_ends: bool,
}

/// What the retry loop tells its caller.
pub(crate) trait RetryHooks {
    /// A request succeeded; `after_refusal` if the key was refused earlier
    /// in this loop.
    fn accepted(&self, endpoint: Endpoint, after_refusal: bool);
    /// The key is refused; the loop waits `wait`, then tries again.
    fn refused(&self, endpoint: Endpoint, err: &ApiError, wait: Duration);
    /// A request got 429 (before its retry).
    fn rate_limited(&self, endpoint: Endpoint);
    /// A retryable failure of attempt `attempt`; the loop waits `wait`.
    fn retrying(&self, endpoint: Endpoint, err: &ApiError, attempt: u32, wait: Duration);
}

/// Runs `op` under `policy`: retryable errors up to `max_attempts` attempts
/// (rate limits without bound, after the wait the API asks for), a refused
/// key slowly without bound (those attempts do not use up the budget of
/// transient errors), terminal errors at once.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    hooks: &impl RetryHooks,
    endpoint: Endpoint,
    mut op: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0u32;
    let mut refusals = 0u32;
    loop {
        attempt += 1;
        let err = match op().await {
            Ok(v) => {
                hooks.accepted(endpoint, refusals > 0);
                return Ok(v);
            }
            Err(e) => e,
        };
        if err.class() == ErrorClass::Auth {
            if policy.forbidden_ends && matches!(err, ApiError::Forbidden(_)) {
                return Err(err);
            }
            attempt = 0;
            refusals += 1;
            let wait = policy.auth_backoff.delay(refusals, rand::random());
            hooks.refused(endpoint, &err, wait);
            tokio::time::sleep(wait).await;
            continue;
        }
        if matches!(err, ApiError::RateLimited { .. }) {
            hooks.rate_limited(endpoint);
        }
        match decide(&err, attempt, policy.max_attempts, &policy.backoff, rand::random()) {
            RetryDecision::RetryAfter(wait) => {
                hooks.retrying(endpoint, &err, attempt, wait);
                tokio::time::sleep(wait).await;
            }
            RetryDecision::GiveUp => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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

    /// Records every hook call.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl RetryHooks for Log {
        fn accepted(&self, _: Endpoint, after_refusal: bool) {
            self.0
                .lock()
                .unwrap()
                .push(format!("accepted after_refusal={after_refusal}"));
        }
        fn refused(&self, _: Endpoint, e: &ApiError, _: Duration) {
            self.0.lock().unwrap().push(format!("refused {}", e.label()));
        }
        fn rate_limited(&self, _: Endpoint) {
            self.0.lock().unwrap().push("429".into());
        }
        fn retrying(&self, _: Endpoint, e: &ApiError, attempt: u32, _: Duration) {
            self.0.lock().unwrap().push(format!("retry {attempt} {}", e.label()));
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        backoff: B,
        auth_backoff: Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        },
        max_attempts: 3,
        forbidden_ends: false,
    };

    /// Runs the loop over scripted answers; returns its result and the hook log.
    async fn run(script: Vec<Result<u32, ApiError>>) -> (Result<u32, ApiError>, Vec<String>) {
        let script = Mutex::new(script.into_iter());
        let log = Log::default();
        let out = with_retries(&POLICY, &log, Endpoint::Status, || {
            let next = script.lock().unwrap().next().expect("no more answers");
            async move { next }
        })
        .await;
        (out, log.0.into_inner().unwrap())
    }

    fn server() -> ApiError {
        ApiError::Server {
            status: 500,
            message: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_within_the_budget() {
        let (out, log) = run(vec![Err(server()), Err(ApiError::Timeout), Ok(7)]).await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(
            log,
            ["retry 1 server", "retry 2 timeout", "accepted after_refusal=false"]
        );
        let (out, log) = run(vec![Err(server()), Err(server()), Err(server())]).await;
        assert!(matches!(out, Err(ApiError::Server { .. })));
        assert_eq!(log, ["retry 1 server", "retry 2 server"], "given up after 3 attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_403_ends_the_request_when_the_policy_says_so() {
        let policy = RetryPolicy {
            forbidden_ends: true,
            ..POLICY
        };
        let log = Log::default();
        let out: Result<u32, _> = with_retries(&policy, &log, Endpoint::Status, || async {
            Err(ApiError::Forbidden("another account's job".into()))
        })
        .await;
        assert!(matches!(out, Err(ApiError::Forbidden(_))));
        assert!(log.0.into_inner().unwrap().is_empty(), "not a refused key");
    }

    #[tokio::test(start_paused = true)]
    async fn terminal_errors_are_not_retried() {
        let (out, log) = run(vec![Err(ApiError::BadRequest("no".into()))]).await;
        assert!(matches!(out, Err(ApiError::BadRequest(_))));
        assert!(log.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_key_is_retried_slowly_without_using_the_budget() {
        let started = tokio::time::Instant::now();
        let mut script = vec![Err(server()), Err(server())];
        script.extend((0..10).map(|_| Err(ApiError::Unauthorized("bad key".into()))));
        script.extend([Err(server()), Err(server()), Ok(1)]);
        let (out, log) = run(script).await;
        assert_eq!(out.unwrap(), 1, "the refusals reset the transient budget");
        assert_eq!(log.iter().filter(|l| l.starts_with("refused")).count(), 10);
        assert_eq!(log.last().unwrap(), "accepted after_refusal=true");
        assert!(started.elapsed() >= Duration::from_secs(60), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_are_retried_without_bound_after_the_asked_wait() {
        let started = tokio::time::Instant::now();
        let limited = || ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
            message: String::new(),
        };
        let mut script: Vec<_> = (0..6).map(|_| Err(limited())).collect();
        script.push(Ok(3));
        let (out, log) = run(script).await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(log.iter().filter(|l| *l == "429").count(), 6);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}

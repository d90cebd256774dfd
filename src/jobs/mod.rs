//! Job lifecycle: submit a batch, learn when it finishes ([`wait`]: polling
//! on an adaptive schedule, woken early by a webhook callback), download and
//! decode its results ([`collect`]). Failed, timed-out and unreadable jobs
//! are resubmitted a bounded number of times; auth refusals are retried
//! slowly forever while the service reports itself unready. Jobs named in
//! commit metadata after a crash or rebalance are recovered: their results
//! are fetched instead of paying for the same identifiers again.
//!
//! The dispatcher runs jobs through the [`Runner`] trait, so that its own
//! tests can script outcomes without HTTP.

mod collect;
mod outcome;
mod poll;
mod reconcile;
mod results;
mod wait;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::api::{with_retries, ApiClient, ApiError, Backoff, Endpoint, ErrorClass, RetryHooks, RetryPolicy};
use crate::config::ApiConfig;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::model::{JobSpec, Matches};
use crate::store::KafkaStore;
use crate::wake::WakeRegistry;
pub(crate) use outcome::{JobError, JobEvent, JobOutcome};
pub(crate) use poll::DurationEstimator;
pub(crate) use reconcile::Adoption;
pub(crate) use results::ResultRow;

/// The pause between two rounds of retries of a request that must not be
/// given up (a status or download of an accepted job).
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// How the dispatcher runs jobs: the seam between its decisions and the API.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Runs job `seq` (submit, wait, results, resubmissions) to its
    /// outcome; `early` when it starts on the slot of a job not yet
    /// confirmed ended (a 429 then ends it [`JobOutcome::NotStarted`]).
    fn run(&self, seq: u64, spec: JobSpec, early: bool) -> impl Future<Output = JobOutcome> + Send + 'static;
    /// Fetches the results of `batch_id`, a job submitted before a crash or
    /// rebalance, or by another pod; `spec` when its identifiers are known.
    fn recover(
        &self,
        seq: u64,
        batch_id: Arc<str>,
        spec: Option<JobSpec>,
    ) -> impl Future<Output = JobOutcome> + Send + 'static;
    /// Compares the API's list of jobs with the journal: what to adopt.
    fn reconcile(&self, seq: u64) -> impl Future<Output = JobOutcome> + Send + 'static;
}

/// Everything a job needs; shared by all jobs.
pub(crate) struct JobContext {
    /// The API client.
    pub(crate) api: Arc<ApiClient>,
    /// `[api]` settings.
    pub(crate) cfg: ApiConfig,
    /// Learnt job durations.
    pub(crate) estimator: Mutex<DurationEstimator>,
    /// Fires when the first job duration is learnt (jobs waiting on the
    /// unlearnt schedule plan again).
    pub(crate) learnt: Notify,
    /// Readiness flags.
    pub(crate) health: Arc<Health>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Webhook base (`{public_url}/webhooks/crustdata`) and fallback poll.
    pub(crate) webhook: Option<(String, Duration)>,
    /// Live webhook tokens.
    pub(crate) wakers: Arc<WakeRegistry>,
    /// To the dispatcher.
    pub(crate) events: UnboundedSender<JobEvent>,
    /// The result store and its job journal.
    pub(crate) store: Arc<KafkaStore>,
    /// Jobs a task of this process runs or adopts now.
    pub(crate) claimed: Mutex<HashSet<Arc<str>>>,
    /// Whether a webhook callback means its job ended (and lends the job's
    /// slot at once): until a callback finds its job still running (an API
    /// that calls back on other changes too).
    pub(crate) callbacks_end_jobs: AtomicBool,
}

impl Runner for Arc<JobContext> {
    fn run(&self, seq: u64, spec: JobSpec, early: bool) -> impl Future<Output = JobOutcome> + Send + 'static {
        let ctx = self.clone();
        async move { ctx.run_job(seq, spec, early).await }
    }

    fn recover(
        &self,
        seq: u64,
        batch_id: Arc<str>,
        spec: Option<JobSpec>,
    ) -> impl Future<Output = JobOutcome> + Send + 'static {
        let ctx = self.clone();
        async move {
            let _claim = ctx.claim(&batch_id);
            ctx.recover_job(seq, batch_id, spec).await
        }
    }

    fn reconcile(&self, seq: u64) -> impl Future<Output = JobOutcome> + Send + 'static {
        let ctx = self.clone();
        async move { JobOutcome::Reconciled(ctx.reconcile_jobs(seq).await) }
    }
}

/// A job claimed by a task of this process, released when dropped.
struct Claim<'a> {
    claimed: &'a Mutex<HashSet<Arc<str>>>,
    batch_id: Arc<str>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claimed.lock().expect("claimed").remove(&self.batch_id);
    }
}

/// What one submission ended in.
enum Attempt {
    Done(Arc<str>, HashMap<String, Matches>, Vec<String>),
    /// An early start's submit got 429.
    NotStarted,
    Rejected(u16, String),
    Retry(JobError),
    GiveUp(JobError),
}

/// The side effects of job `seq`'s request retries.
struct Hooks<'a> {
    ctx: &'a JobContext,
    seq: u64,
}

impl RetryHooks for Hooks<'_> {
    fn accepted(&self, endpoint: Endpoint, _after_refusal: bool) {
        if self.ctx.health.set_api_refused(false) {
            info!(request = endpoint.as_str(), "the API accepts the key again; resuming");
        }
    }

    fn refused(&self, endpoint: Endpoint, err: &ApiError, wait: Duration) {
        if self.ctx.health.set_api_refused(true) {
            error!(request = endpoint.as_str(), error = %err, "the API refuses the key: no new jobs, /readyz 503, retried slowly until it accepts it");
        } else {
            debug!(request = endpoint.as_str(), error = %err, retry_in = ?wait, "the key is still refused");
        }
        self.ctx.metrics.api_retry(endpoint.as_str(), err.label());
    }

    fn rate_limited(&self, endpoint: Endpoint) {
        if endpoint == Endpoint::Submit {
            let _ = self.ctx.events.send(JobEvent::RateLimited { seq: self.seq });
        }
    }

    fn retrying(&self, endpoint: Endpoint, err: &ApiError, attempt: u32, wait: Duration) {
        debug!(request = endpoint.as_str(), error = %err, attempt, retry_in = ?wait, "retrying");
        self.ctx.metrics.api_retry(endpoint.as_str(), err.label());
    }
}

impl JobContext {
    /// The retry policy of `endpoint`: a refused key is retried slowly on a
    /// submit; a 403 on anything else concerns that one job (a job of
    /// another account, a rotated key) and ends the request.
    fn policy(&self, endpoint: Endpoint) -> RetryPolicy {
        RetryPolicy {
            forbidden_ends: endpoint != Endpoint::Submit,
            backoff: Backoff {
                base: Duration::from_millis(250),
                max: self.cfg.max_backoff,
            },
            auth_backoff: Backoff {
                base: Duration::from_secs(2),
                max: self.cfg.max_backoff,
            },
            max_attempts: self.cfg.max_request_retries,
        }
    }

    /// One request of job `seq` under the retry policy.
    async fn call<T, F, Fut>(&self, endpoint: Endpoint, seq: u64, op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        with_retries(&self.policy(endpoint), &Hooks { ctx: self, seq }, endpoint, op).await
    }

    /// One request of job `seq` that must not be given up for a reason that
    /// may pass (a status or download of an accepted job): after the retry
    /// policy's attempts, pauses and tries again until `deadline`.
    async fn persist<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        seq: u64,
        deadline: Instant,
        mut op: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        loop {
            match self.call(endpoint, seq, &mut op).await {
                Ok(v) => return Ok(v),
                Err(e) if may_pass(&e) && Instant::now() + RETRY_PAUSE < deadline => {
                    warn!(request = endpoint.as_str(), error = %e, "still failing; retrying on the same job");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn claim(&self, batch_id: &Arc<str>) -> Claim<'_> {
        self.claimed.lock().expect("claimed").insert(batch_id.clone());
        Claim {
            claimed: &self.claimed,
            batch_id: batch_id.clone(),
        }
    }

    /// Runs job `seq` to its outcome.
    async fn run_job(&self, seq: u64, spec: JobSpec, mut early: bool) -> JobOutcome {
        let mut last = None;
        for attempt in 1..=self.cfg.max_job_attempts {
            if let Some(why) = &last {
                let _ = self.events.send(JobEvent::Resubmitting { seq });
                self.metrics.job_resubmitted();
                info!(attempt, kind = spec.kind.as_str(), size = spec.ids.len(), reason = %why, "resubmitting job");
            }
            match self.attempt(seq, &spec, std::mem::take(&mut early)).await {
                Attempt::Done(batch_id, results, missing) => {
                    return JobOutcome::Done {
                        spec,
                        batch_id,
                        results,
                        missing,
                        adopted: false,
                    }
                }
                Attempt::NotStarted => return JobOutcome::NotStarted { spec },
                Attempt::Rejected(status, message) => return JobOutcome::Rejected { spec, status, message },
                Attempt::GiveUp(error) => return JobOutcome::Failed { spec, error },
                Attempt::Retry(why) => last = Some(why),
            }
        }
        let error = last.expect("at least one attempt");
        JobOutcome::Failed { spec, error }
    }

    /// Fetches the results of an adopted job: with its identifiers when
    /// the journal knows them, else every row of its file.
    async fn recover_job(&self, seq: u64, batch_id: Arc<str>, spec: Option<JobSpec>) -> JobOutcome {
        let started = Instant::now();
        let deadline = started + self.cfg.job_timeout;
        let status = match self.wait(seq, &batch_id, started, None, &Notify::new(), false).await {
            Ok(s) => s,
            Err(error) => return JobOutcome::RecoveryFailed { batch_id, error },
        };
        let failed = |batch_id: Arc<str>, source| JobOutcome::RecoveryFailed {
            error: JobError::Results {
                batch_id: batch_id.clone(),
                source,
            },
            batch_id,
        };
        match spec {
            Some(spec) => match self.collect(seq, &spec, &batch_id, status, deadline, false).await {
                Ok((results, missing)) => JobOutcome::Done {
                    spec,
                    batch_id,
                    results,
                    missing,
                    adopted: true,
                },
                Err(source) => failed(batch_id, source),
            },
            None if status.result_count == Some(0) => JobOutcome::Recovered {
                batch_id,
                rows: Vec::new(),
            },
            None => match self.rows(seq, &batch_id, status, deadline).await {
                Ok(rows) => JobOutcome::Recovered { batch_id, rows },
                Err(source) => failed(batch_id, source),
            },
        }
    }

    async fn attempt(&self, seq: u64, spec: &JobSpec, early: bool) -> Attempt {
        let Some((base, _)) = &self.webhook else {
            return self.submit_and_collect(seq, spec, None, &Notify::new(), early).await;
        };
        let (token, wake) = self.wakers.register();
        let hook_url = format!("{base}/{token}");
        let result = self.submit_and_collect(seq, spec, Some(&hook_url), &wake, early).await;
        self.wakers.remove(&token);
        result
    }

    /// Submits `spec`; after an error that may have hidden an acceptance
    /// (a timeout, a 5xx, a broken connection), the API's list is checked
    /// for the job before the submit is tried again. An early start's 429
    /// is not retried (`Ok(None)`): the job whose slot it took still runs,
    /// which says nothing about other pods.
    async fn submit(
        &self,
        seq: u64,
        spec: &JobSpec,
        hook_url: Option<&str>,
        early: bool,
    ) -> Result<Option<Accepted>, ApiError> {
        if early {
            match self.submit_once(seq, spec, hook_url).await {
                Err(ApiError::RateLimited { .. }) => return Ok(None),
                // Anything else is the usual policy's to retry and report.
                Err(_) => {}
                Ok(accepted) => return Ok(Some(accepted)),
            }
        }
        let policy = self.policy(Endpoint::Submit);
        let hooks = Hooks { ctx: self, seq };
        with_retries(&policy, &hooks, Endpoint::Submit, || {
            self.submit_once(seq, spec, hook_url)
        })
        .await
        .map(Some)
    }

    /// One submit request, and after an error that may have hidden an
    /// acceptance, a look for the job in the API's list.
    async fn submit_once(&self, seq: u64, spec: &JobSpec, hook_url: Option<&str>) -> Result<Accepted, ApiError> {
        let (at, sent_at) = (Instant::now(), chrono::Utc::now());
        let sent = |answered: bool| Sent {
            at,
            utc: sent_at,
            rtt: answered.then(|| at.elapsed()),
        };
        match self.api.submit(spec.kind, &spec.ids, hook_url).await {
            Ok(s) => {
                let full = (s.remaining == Some(0)).then(|| s.reset.unwrap_or(RETRY_PAUSE));
                Ok((Arc::from(s.batch_id), full, sent(true)))
            }
            Err(e) if maybe_accepted(&e) => match self.find_lost_submit(seq, spec, sent_at).await {
                Some(id) => {
                    self.metrics.job_adopted("lost_submit");
                    Ok((id, None, sent(false)))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn submit_and_collect(
        &self,
        seq: u64,
        spec: &JobSpec,
        hook_url: Option<&str>,
        wake: &Notify,
        early: bool,
    ) -> Attempt {
        let submitted = Instant::now();
        let (batch_id, key_full_for, sent) = match self.submit(seq, spec, hook_url, early).await {
            Ok(Some(submitted)) => submitted,
            Ok(None) => {
                debug!(
                    size = spec.ids.len(),
                    "early submit refused: the job whose slot it took still runs"
                );
                return Attempt::NotStarted;
            }
            Err(ApiError::BadRequest(m)) => return Attempt::Rejected(400, m),
            Err(ApiError::NotFound(m)) => return Attempt::Rejected(404, m),
            Err(ApiError::Unexpected {
                status: s @ (405 | 415),
                message,
            }) => return Attempt::Rejected(s, message),
            Err(e) => return Attempt::Retry(JobError::Submit(e)),
        };
        let _claim = self.claim(&batch_id);
        // Write-ahead: the journal has the job before anything can forget it.
        if let Err(e) = self.store.journal_open(&batch_id, spec).await {
            warn!(%batch_id, error = %e, "job not written to the journal; a crash now would be caught by reconciliation only");
        }
        self.metrics.job_submitted();
        let _ = self.events.send(JobEvent::Submitted {
            seq,
            batch_id: batch_id.clone(),
            key_full_for,
        });
        debug!(%batch_id, size = spec.ids.len(), "job submitted");
        let status = match self.wait(seq, &batch_id, sent.at, Some(sent), wake, true).await {
            Ok(s) => s,
            Err(why) => return Attempt::Retry(why),
        };
        self.metrics.job_finished("completed", submitted.elapsed());
        let deadline = submitted + self.cfg.job_timeout;
        match self.collect(seq, spec, &batch_id, status, deadline, true).await {
            Ok((results, missing)) => Attempt::Done(batch_id, results, missing),
            // The job completed and billed: submitting it again would pay
            // again for results that can be fetched. Links the allowlist
            // refuses, files above the bound, and errors that outlasted the
            // job's deadline end the job instead.
            Err(source) => Attempt::GiveUp(JobError::Results { batch_id, source }),
        }
    }
}

/// An accepted submit: the job's id, how long the key has no slot left
/// when the API said so, and when it was sent.
type Accepted = (Arc<str>, Option<Duration>, Sent);

/// When an accepted submit was sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    at: Instant,
    utc: chrono::DateTime<chrono::Utc>,
    /// Until its answer; `None` when the answer was lost.
    rtt: Option<Duration>,
}

impl Sent {
    /// How long after the send the API created the job, by its own
    /// `created_at`, bounded by the round trip (clocks may disagree).
    fn accept_delay(&self, created_at: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        let rtt = self.rtt?;
        Some((created_at - self.utc).to_std().unwrap_or_default().min(rtt))
    }
}

/// An error after which another attempt of the same request may succeed.
fn may_pass(e: &ApiError) -> bool {
    e.class() == ErrorClass::Retryable || matches!(e, ApiError::Malformed(_))
}

/// A submit error after which the API may nevertheless have created the job.
fn maybe_accepted(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Timeout | ApiError::Transport(_) | ApiError::Server { .. } | ApiError::Malformed(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_delay_is_the_apis_own_within_the_round_trip() {
        let utc = chrono::Utc::now();
        let ms = chrono::Duration::milliseconds;
        let sent = Sent {
            at: Instant::now(),
            utc,
            rtt: Some(Duration::from_millis(30)),
        };
        assert_eq!(sent.accept_delay(utc + ms(4)), Some(Duration::from_millis(4)));
        // A clock behind ours, or ahead by more than the round trip.
        assert_eq!(sent.accept_delay(utc - ms(500)), Some(Duration::ZERO));
        assert_eq!(sent.accept_delay(utc + ms(900)), Some(Duration::from_millis(30)));
        let lost = Sent { rtt: None, ..sent };
        assert_eq!(
            lost.accept_delay(utc + ms(4)),
            None,
            "an answer that was lost says nothing"
        );
    }
}

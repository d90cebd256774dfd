//! Jobs: one task per job drives it through its life
//! ([`crate::lifecycle`]): the journal record written ahead of every
//! submit ([`submit`]), a lost answer resolved by content ([`lost`]),
//! waiting for the end (adaptive polling or a webhook, [`wait`] and
//! [`poll`]), reading the results ([`collect`], [`results`]), and another
//! submission after a failure or a time-out. A job of another pod is
//! followed until its results are in, and claimed when its owner falls
//! silent ([`follow`]).
//!
//! The dispatcher runs jobs through the [`Runner`] trait, so that its own
//! tests can script outcomes without HTTP.

mod collect;
mod follow;
mod lost;
mod outcome;
mod poll;
mod results;
mod submit;
mod wait;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tracing::{info, warn, Instrument, Span};

use crate::api::{with_retries, ApiClient, ApiError, Backoff, Endpoint, ErrorClass, RetryHooks, RetryPolicy};
use crate::config::ApiConfig;
use crate::health::Health;
use crate::lifecycle::{JobId, Outcome, Phase, Record, Stage};
use crate::metrics::Metrics;
use crate::model::JobSpec;
use crate::store::{KafkaStore, Reserved};
use crate::telemetry;
use crate::wake::WakeRegistry;
pub(crate) use outcome::{JobError, JobEvent, JobOutcome};
pub(crate) use poll::DurationEstimator;
use submit::Submitted;

/// The pause between two rounds of retries of a request that must not be
/// given up (a status or download of an accepted job).
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// How the dispatcher runs jobs: the seam between its decisions and the API.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Runs new job `seq` (journal id `job`, covering `spec`) to its outcome.
    fn run(&self, seq: u64, job: JobId, spec: JobSpec) -> impl Future<Output = JobOutcome> + Send + 'static;
    /// Drives journaled job `job` on from `rec`: as its owner (this pod's
    /// own, from before a restart), or waiting for its owner and claiming
    /// it if the owner falls silent.
    fn adopt(&self, seq: u64, job: JobId, rec: Record) -> impl Future<Output = JobOutcome> + Send + 'static;
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
    /// The source's offsets: whether partitions were revoked while a job
    /// waited to submit.
    pub(crate) tracker: Arc<Mutex<crate::offsets::OffsetTracker>>,
}

impl Runner for Arc<JobContext> {
    fn run(&self, seq: u64, job: JobId, spec: JobSpec) -> impl Future<Output = JobOutcome> + Send + 'static {
        let ctx = self.clone();
        async move {
            let rec = Record::submitting(&spec, ctx.store.me(), 0);
            ctx.drive(seq, &job, spec, rec, Step::Submit).await
        }
    }

    fn adopt(&self, seq: u64, job: JobId, rec: Record) -> impl Future<Output = JobOutcome> + Send + 'static {
        let ctx = self.clone();
        async move { ctx.adopt_job(seq, job, rec).await }
    }
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
            tracing::error!(request = endpoint.as_str(), error = %err, "the API refuses the key: no new jobs, /readyz 503, retried slowly until it accepts it");
        } else {
            tracing::debug!(request = endpoint.as_str(), error = %err, retry_in = ?wait, "the key is still refused");
        }
        self.ctx.metrics.api_retry(endpoint.as_str(), err.label());
    }

    fn rate_limited(&self, endpoint: Endpoint) {
        if endpoint == Endpoint::Submit {
            let _ = self.ctx.events.send(JobEvent::RateLimited { seq: self.seq });
        }
    }

    fn retrying(&self, endpoint: Endpoint, err: &ApiError, attempt: u32, wait: Duration) {
        tracing::debug!(request = endpoint.as_str(), error = %err, attempt, retry_in = ?wait, "retrying");
        self.ctx.metrics.api_retry(endpoint.as_str(), err.label());
    }
}

/// Where a job's task goes next.
#[derive(Debug)]
enum Step {
    /// Submit (the record's attempt number, or the next one).
    Submit,
    /// The answer of the submit sent at `sent_at_ms` was lost;
    /// `unanswered` when no answer came at all (the request may still be
    /// on its way: it is waited out before anything is called never
    /// created).
    Resolve { sent_at_ms: i64, unanswered: bool },
    /// Accepted as `batch_id`: wait for its end (from `from`; `sent` when
    /// this pod's own submit, to learn from).
    Wait {
        batch_id: Arc<str>,
        from: Instant,
        sent: Option<wait::Sent>,
    },
    /// Ended: read its results.
    Collect {
        batch_id: Arc<str>,
        status: Option<crate::api::JobStatus>,
    },
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
        let span = telemetry::request(match endpoint {
            Endpoint::Submit => "submit",
            Endpoint::Status => "poll",
            Endpoint::List => "list",
            Endpoint::Download => "download",
        });
        let result = with_retries(&self.policy(endpoint), &Hooks { ctx: self, seq }, endpoint, op)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            telemetry::failed(&span, e);
        }
        result
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

    /// Tells the dispatcher that job `seq` moved to `phase`.
    fn phase(&self, seq: u64, phase: Phase) {
        let _ = self.events.send(JobEvent::Phase { seq, phase });
    }

    /// Drives job `job` (this pod owns it; `rec` is its latest record)
    /// from `step` to its outcome. Every submission is written ahead; a
    /// failed or timed-out job is submitted again (up to
    /// `api.max_job_attempts` submissions); an accepted job is never given
    /// up for a transient reason.
    async fn drive(&self, seq: u64, job: &JobId, spec: JobSpec, mut rec: Record, mut step: Step) -> JobOutcome {
        let mut last: Option<JobError> = None;
        // A submit leaves only if no partition was revoked since the job
        // started (its records may have gone to another pod).
        let revocations = self.revocations();
        // Submitting again (or first after a restart or a claim) is a
        // decision: made only once this pod's record is confirmed the
        // job's latest in the log (no claim came first).
        let mut confirm = !matches!(step, Step::Submit);
        let hook = self.webhook.as_ref().map(|(base, _)| {
            let (token, wake) = self.wakers.register();
            (format!("{base}/{token}"), token, wake)
        });
        let outcome = loop {
            step = match step {
                Step::Submit => {
                    let attempt = rec.attempt().max(1) + u32::from(last.is_some());
                    if attempt > self.cfg.max_job_attempts {
                        break JobOutcome::Failed {
                            spec,
                            error: last.expect("a failed attempt"),
                        };
                    }
                    if let Some(why) = &last {
                        self.metrics.job_resubmitted();
                        info!(%job, attempt, size = spec.ids.len(), reason = %why, "submitting the job again");
                    }
                    if std::mem::take(&mut confirm) && !self.still_own(job, &mut rec).await {
                        break JobOutcome::Released;
                    }
                    // The budget's reservation for this submission comes
                    // first: without a valid one, nothing leaves. A job
                    // nothing of which was written yet gives its
                    // identifiers back when there is no room (the
                    // dispatcher cuts them to the room that comes back).
                    let fresh = matches!(rec.stage, Stage::Submitting { sent_at_ms: 0, .. });
                    let n = spec.ids.len() as u64;
                    if self.store.reserve(job, attempt, n, fresh).await == Reserved::NoRoom {
                        break JobOutcome::Released;
                    }
                    self.phase(seq, Phase::Submitting);
                    let hook_url = hook.as_ref().map(|(url, _, _)| url.as_str());
                    match self.submit(seq, job, &mut rec, attempt, hook_url, revocations).await {
                        Submitted::NotSent(why) => {
                            // Nothing left: the record written ahead is
                            // closed, and the identifiers go back to the
                            // dispatcher (which keeps those still ours).
                            info!(%job, reason = %why, "submit not sent; the job's identifiers are planned again");
                            self.metrics.submit_withheld(why.label());
                            self.store.settle(job, attempt, 0).await;
                            self.store.journal_closed(job, Outcome::Released).await;
                            break JobOutcome::Released;
                        }
                        Submitted::Accepted { batch_id, sent } => {
                            last = None;
                            Step::Wait {
                                batch_id,
                                from: sent.at,
                                sent: Some(sent),
                            }
                        }
                        Submitted::Lost { sent_at_ms, unanswered } => {
                            self.phase(seq, Phase::Unresolved);
                            Step::Resolve { sent_at_ms, unanswered }
                        }
                        Submitted::Rejected(status, message) => {
                            // Refused: it created nothing and costs nothing.
                            self.store.settle(job, attempt, 0).await;
                            break JobOutcome::Rejected { spec, status, message };
                        }
                        Submitted::GaveUp(e) => {
                            last = Some(JobError::Submit(e));
                            Step::Submit
                        }
                    }
                }
                Step::Resolve { sent_at_ms, unanswered } => {
                    match self.resolve_lost(seq, &spec, &rec, sent_at_ms, unanswered).await {
                        lost::Resolved::Ours(status) => {
                            let batch_id: Arc<str> = Arc::from(status.batch_id.clone().unwrap_or_default());
                            rec = self.accepted(job, &rec, &batch_id).await;
                            self.metrics.lost_submit("ours");
                            self.phase(seq, Phase::Running);
                            Step::Wait {
                                batch_id,
                                from: Instant::now(),
                                sent: None,
                            }
                        }
                        lost::Resolved::NotCreated => {
                            confirm = true;
                            Step::Submit
                        }
                        lost::Resolved::Undecided(why) => {
                            last = Some(JobError::Undecided(why));
                            confirm = true;
                            Step::Submit
                        }
                    }
                }
                Step::Wait { batch_id, from, sent } => {
                    let wake = hook.as_ref().filter(|_| sent.is_some()).map(|(_, _, w)| w.clone());
                    match self.wait(seq, &batch_id, from, sent, wake.as_deref()).await {
                        Ok(status) => Step::Collect {
                            batch_id,
                            status: Some(status),
                        },
                        Err(why) => {
                            rec.earlier.push(batch_id.to_string());
                            last = Some(why);
                            confirm = true;
                            Step::Submit
                        }
                    }
                }
                Step::Collect { batch_id, status } => {
                    self.phase(seq, Phase::Collecting);
                    match self.collect_job(seq, &spec, &batch_id, status, true).await {
                        Ok((results, missing)) => {
                            failpoint!("collect.after_download");
                            let credits = results.values().filter(|m| crate::model::has_matches(m)).count() as u64;
                            let span = Span::current();
                            telemetry::attr(&span, "results", results.len() as i64);
                            telemetry::attr(&span, "matches", credits as i64);
                            telemetry::attr(&span, "credits", credits as i64);
                            let completed = rec.at(Stage::Completed {
                                attempt: rec.attempt(),
                                batch_id: batch_id.to_string(),
                                credits,
                                at_ms: now_ms(),
                            });
                            self.store.journal(job, &completed).await;
                            self.store.settle(job, rec.attempt().max(1), credits).await;
                            break JobOutcome::Done {
                                spec,
                                batch_id,
                                results,
                                missing,
                                followed: false,
                            };
                        }
                        // The job completed and billed: submitting it again
                        // would pay again for results that can be fetched.
                        // Links the allowlist refuses, files above the
                        // bound, and errors that outlasted the deadline end
                        // the job instead.
                        Err(source) => {
                            break JobOutcome::Failed {
                                spec,
                                error: JobError::Results { batch_id, source },
                            }
                        }
                    }
                }
            };
        };
        if let Some((_, token, _)) = &hook {
            self.wakers.remove(token);
        }
        outcome
    }

    /// Writes `rec` again (the next revision) and waits until the log has
    /// it: whether this pod still owns job `job` (a claim of a pod that
    /// took this one for gone may have come first). `rec` follows.
    async fn still_own(&self, job: &JobId, rec: &mut Record) -> bool {
        let again = rec.at(rec.stage.clone());
        let written = self.store.journal(job, &again).await;
        match self.store.confirmed(job, written).await {
            Some(now) if now.owner == self.store.me() && now.rev == again.rev => {
                *rec = again;
                true
            }
            other => {
                info!(%job, owner = other.as_ref().map(|r| r.owner.as_str()), "the job changed hands; leaving it to its owner");
                false
            }
        }
    }

    /// Writes that job `job` was accepted as `batch_id` (an attribute of
    /// the job's span, the current one).
    async fn accepted(&self, job: &JobId, rec: &Record, batch_id: &str) -> Record {
        telemetry::attr(&Span::current(), "batch_id", batch_id.to_string());
        let accepted = rec.at(Stage::Accepted {
            attempt: rec.attempt().max(1),
            batch_id: batch_id.to_string(),
            at_ms: now_ms(),
        });
        self.store.journal(job, &accepted).await;
        accepted
    }

    /// Resumes this pod's job `job` from its record (after a restart, or a
    /// claim).
    async fn resume(&self, seq: u64, job: &JobId, spec: JobSpec, rec: Record) -> JobOutcome {
        let step = match &rec.stage {
            Stage::Submitting { sent_at_ms, .. } => Step::Resolve {
                sent_at_ms: *sent_at_ms,
                unanswered: true,
            },
            Stage::Accepted { batch_id, .. } => Step::Wait {
                batch_id: Arc::from(batch_id.as_str()),
                from: Instant::now(),
                sent: None,
            },
            Stage::Completed { batch_id, .. } => Step::Collect {
                batch_id: Arc::from(batch_id.as_str()),
                status: None,
            },
            Stage::Closed { .. } => return JobOutcome::Released,
        };
        info!(%job, stage = ?rec.stage, "resuming a job of this pod");
        self.metrics.job_adopted("journal");
        self.phase(seq, Phase::of(&rec.stage));
        self.drive(seq, job, spec, rec, step).await
    }
}

pub(crate) use crate::model::now_ms;

/// An error after which another attempt of the same request may succeed.
fn may_pass(e: &ApiError) -> bool {
    e.class() == ErrorClass::Retryable || matches!(e, ApiError::Malformed(_))
}

//! Job lifecycle: submit a batch, learn when it finishes (polling on an
//! adaptive schedule, woken early by a webhook callback), download and
//! decode its results. Failed, timed-out and unreadable jobs are resubmitted
//! a bounded number of times; auth refusals are retried slowly forever
//! while the service reports itself unready. Jobs named in commit metadata
//! after a crash or rebalance are recovered: their results are fetched
//! instead of paying for the same identifiers again.

pub mod poll;
pub mod results;
pub mod slots;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::retry::{decide, Backoff, RetryDecision};
use crate::api::{ApiClient, ApiError, ErrorClass, JobState, JobStatus};
use crate::config::ApiConfig;
use crate::decode::{match_key, IdentifierType};
use crate::metrics::Metrics;
use crate::server::Health;
use poll::DurationEstimator;
use results::{has_matches, Matches, ResultRow};

/// A batch to run as one job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Identifier kind of every id.
    pub kind: IdentifierType,
    /// Unique normalised identifiers, at most 300.
    pub ids: Vec<String>,
}

/// How a job ended.
#[derive(Debug)]
pub enum JobOutcome {
    /// Results are in: `results` maps each submitted identifier found in the
    /// file (or all of them, unmatched, when `result_count` was 0); `missing`
    /// lists identifiers the file did not mention.
    Done {
        /// The batch.
        spec: JobSpec,
        /// The API's id of the job that produced the results.
        batch_id: Arc<str>,
        /// Identifier -> matches.
        results: HashMap<String, Matches>,
        /// Submitted identifiers absent from the results.
        missing: Vec<String>,
    },
    /// The API refused the submit with 400.
    Rejected {
        /// The batch.
        spec: JobSpec,
        /// The API's message.
        message: String,
    },
    /// Every attempt failed.
    Failed {
        /// The batch.
        spec: JobSpec,
        /// The last failure.
        message: String,
    },
    /// A job recovered from commit metadata finished: its result rows.
    Recovered {
        /// The job.
        batch_id: Arc<str>,
        /// Every row of its result file (empty when it had no matches file).
        rows: Vec<ResultRow>,
    },
    /// A recovered job could not be used (failed, forgotten, unreadable).
    RecoveryFailed {
        /// The job.
        batch_id: Arc<str>,
        /// Why.
        message: String,
    },
}

/// What running jobs tell the dispatcher while they run.
#[derive(Debug)]
pub enum JobEvent {
    /// The API accepted job `seq` as `batch_id`.
    Submitted {
        /// The dispatcher's job number.
        seq: u64,
        /// The API's id.
        batch_id: Arc<str>,
    },
    /// A submit of job `seq` got 429.
    RateLimited {
        /// The dispatcher's job number.
        seq: u64,
    },
}

/// Webhook tokens -> jobs waiting for them.
pub type WakeRegistry = Mutex<HashMap<String, Arc<Notify>>>;

/// Everything a job needs; shared by all jobs.
pub struct JobContext {
    /// The API client.
    pub api: Arc<ApiClient>,
    /// `[api]` settings.
    pub cfg: ApiConfig,
    /// Learnt job durations.
    pub estimator: Mutex<DurationEstimator>,
    /// Readiness flags.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Webhook base (`{public_url}/webhooks/crustdata`) and fallback poll.
    pub webhook: Option<(String, Duration)>,
    /// Live webhook tokens.
    pub wakers: Arc<WakeRegistry>,
    /// To the dispatcher.
    pub events: UnboundedSender<JobEvent>,
}

enum Attempt {
    Done(Arc<str>, HashMap<String, Matches>, Vec<String>),
    Rejected(String),
    Retry(String),
    GiveUp(String),
}

impl JobContext {
    fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(250),
            max: self.cfg.max_backoff,
        }
    }

    /// Runs one request with the retry policy: retryable errors up to
    /// `api.max_request_retries` attempts (rate limits without bound), auth
    /// errors slowly without bound (marking the API refused meanwhile).
    async fn call<T, F, Fut>(&self, what: &'static str, seq: u64, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0u32;
        let mut auth_attempt = 0u32;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => {
                    if auth_attempt > 0 {
                        info!(request = what, "API accepts the key again");
                    }
                    self.health.set_api_refused(false);
                    return Ok(v);
                }
                Err(e) if e.class() == ErrorClass::Auth => {
                    // Slow retries of a refused key do not use up the budget
                    // for transient errors.
                    attempt = 0;
                    auth_attempt += 1;
                    self.health.set_api_refused(true);
                    let wait = Backoff {
                        base: Duration::from_secs(2),
                        max: self.cfg.max_backoff,
                    }
                    .delay(auth_attempt, rand::random());
                    warn!(request = what, error = %e, retry_in = ?wait, "API refuses the key; no new jobs until it accepts it");
                    self.metrics.api_retry(what, e.label());
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    if what == "submit" && matches!(e, ApiError::RateLimited { .. }) {
                        let _ = self.events.send(JobEvent::RateLimited { seq });
                    }
                    match decide(
                        &e,
                        attempt,
                        self.cfg.max_request_retries,
                        &self.backoff(),
                        rand::random(),
                    ) {
                        RetryDecision::RetryAfter(wait) => {
                            debug!(request = what, error = %e, attempt, retry_in = ?wait, "retrying");
                            self.metrics.api_retry(what, e.label());
                            tokio::time::sleep(wait).await;
                        }
                        RetryDecision::GiveUp => return Err(e),
                    }
                }
            }
        }
    }

    /// Runs job `seq` to its outcome.
    pub async fn run(self: Arc<Self>, seq: u64, spec: JobSpec) -> JobOutcome {
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_job_attempts {
            if attempt > 1 {
                self.metrics.job_resubmitted();
                info!(attempt, kind = spec.kind.as_str(), size = spec.ids.len(), reason = %last, "resubmitting job");
            }
            match self.attempt(seq, &spec).await {
                Attempt::Done(batch_id, results, missing) => {
                    return JobOutcome::Done {
                        spec,
                        batch_id,
                        results,
                        missing,
                    }
                }
                Attempt::Rejected(message) => return JobOutcome::Rejected { spec, message },
                Attempt::GiveUp(message) => return JobOutcome::Failed { spec, message },
                Attempt::Retry(why) => last = why,
            }
        }
        JobOutcome::Failed { spec, message: last }
    }

    /// Fetches the results of a job submitted before a crash or rebalance.
    pub async fn recover(self: Arc<Self>, seq: u64, batch_id: Arc<str>) -> JobOutcome {
        let failed = |message: String| JobOutcome::RecoveryFailed {
            batch_id: batch_id.clone(),
            message,
        };
        let status = match self.wait(seq, &batch_id, Instant::now(), &Notify::new(), true).await {
            Ok(s) => s,
            Err(why) => return failed(why),
        };
        if status.result_count == Some(0) {
            return JobOutcome::Recovered {
                batch_id,
                rows: Vec::new(),
            };
        }
        match self.fetch_all(seq, &batch_id, status).await {
            Ok(rows) => JobOutcome::Recovered { batch_id, rows },
            Err(e) => failed(e.to_string()),
        }
    }

    async fn attempt(&self, seq: u64, spec: &JobSpec) -> Attempt {
        let token = self.webhook.as_ref().map(|_| new_token());
        let wake = Arc::new(Notify::new());
        let hook_url = match (&self.webhook, &token) {
            (Some((base, _)), Some(t)) => {
                self.wakers.lock().expect("wakers").insert(t.clone(), wake.clone());
                Some(format!("{base}/{t}"))
            }
            _ => None,
        };
        let result = self.submit_and_collect(seq, spec, hook_url.as_deref(), &wake).await;
        if let Some(t) = token {
            self.wakers.lock().expect("wakers").remove(&t);
        }
        result
    }

    async fn submit_and_collect(&self, seq: u64, spec: &JobSpec, hook_url: Option<&str>, wake: &Notify) -> Attempt {
        let submitted = Instant::now();
        let batch_id: Arc<str> = match self
            .call("submit", seq, || self.api.submit(spec.kind, &spec.ids, hook_url))
            .await
        {
            Ok(id) => id.into(),
            Err(ApiError::BadRequest(m)) => return Attempt::Rejected(m),
            Err(e) => return Attempt::Retry(format!("submit: {e}")),
        };
        self.metrics.job_submitted();
        let _ = self.events.send(JobEvent::Submitted {
            seq,
            batch_id: batch_id.clone(),
        });
        debug!(%batch_id, size = spec.ids.len(), "job submitted");
        let status = match self.wait(seq, &batch_id, submitted, wake, false).await {
            Ok(s) => s,
            Err(why) => return Attempt::Retry(why),
        };
        self.metrics.job_finished("completed", submitted.elapsed());
        match self.collect(seq, spec, &batch_id, status).await {
            Ok((results, missing)) => Attempt::Done(batch_id, results, missing),
            // A link the allowlist refuses stays refused: do not pay again.
            Err(e @ ApiError::RefusedUrl(_)) => Attempt::GiveUp(format!("results of {batch_id}: {e}")),
            Err(e) => Attempt::Retry(format!("results of {batch_id}: {e}")),
        }
    }

    /// Polls until the job completes; `Err` for failed or timed out.
    async fn wait(
        &self,
        seq: u64,
        batch_id: &str,
        submitted: Instant,
        wake: &Notify,
        recovering: bool,
    ) -> Result<JobStatus, String> {
        let mut index = 0u32;
        let mut last_running = None;
        loop {
            let elapsed = submitted.elapsed();
            if elapsed >= self.cfg.job_timeout {
                self.metrics.job_finished("timed_out", elapsed);
                return Err(format!("job {batch_id} not finished within api.job_timeout"));
            }
            let delay = match &self.webhook {
                // With callbacks, poll rarely: the callback wakes us.
                Some((_, fallback)) if !recovering => *fallback,
                _ => {
                    let est = self.estimator.lock().expect("estimator").clone();
                    poll::next_delay(index, elapsed, &est, self.cfg.poll_initial, self.cfg.poll_max)
                }
            };
            let delay = delay.min(self.cfg.job_timeout - elapsed);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wake.notified() => { self.metrics.webhook_wakeup(); }
            }
            index += 1;
            let asked = submitted.elapsed();
            let status = match self.call("status", seq, || self.api.status(batch_id)).await {
                Ok(s) => s,
                Err(e) => return Err(format!("status of {batch_id}: {e}")),
            };
            match status.state {
                JobState::Running => last_running = Some(asked),
                JobState::Completed => {
                    if !recovering {
                        // Learn the job's real duration, not when we happened to
                        // look: the server's own timestamps, else the middle of
                        // the last "running" and first "completed" observation.
                        let observed = status.server_duration.unwrap_or_else(|| match last_running {
                            Some(r) => (r + asked) / 2,
                            None => asked,
                        });
                        self.estimator.lock().expect("estimator").observe(observed);
                    }
                    return Ok(status);
                }
                JobState::Failed => {
                    self.metrics.job_finished("failed", submitted.elapsed());
                    let msg = status.error_message.unwrap_or_else(|| "no error_message".into());
                    return Err(format!("job {batch_id} failed: {msg}"));
                }
            }
        }
    }

    /// Downloads and decodes the results of a completed job and matches
    /// them to the submitted identifiers.
    async fn collect(
        &self,
        seq: u64,
        spec: &JobSpec,
        batch_id: &str,
        status: JobStatus,
    ) -> Result<(HashMap<String, Matches>, Vec<String>), ApiError> {
        let empty = status.result_count == Some(0);
        let rows = if empty {
            Vec::new()
        } else {
            self.fetch_all(seq, batch_id, status).await?
        };
        let mut found: HashMap<String, Matches> = rows
            .into_iter()
            .map(|r| (match_key(&r.matched_on), r.matches))
            .collect();
        let mut results = HashMap::with_capacity(spec.ids.len());
        let mut missing = Vec::new();
        let mut credits = 0u64;
        for id in &spec.ids {
            match found.remove(&match_key(id)) {
                Some(m) => {
                    if has_matches(&m) {
                        credits += 1;
                    }
                    results.insert(id.clone(), m);
                }
                None if empty => {
                    results.insert(id.clone(), results::no_matches());
                }
                None => missing.push(id.clone()),
            }
        }
        self.metrics.credits_spent(credits);
        info!(%batch_id, submitted = spec.ids.len(), matched = credits, missing = missing.len(), credits_spent = credits, "job results");
        Ok((results, missing))
    }

    /// Downloads every part of a completed job's results (`download_urls`,
    /// else `download_url`). An expired link is renewed once by a fresh
    /// status request; a corrupt part is fetched once more.
    async fn fetch_all(&self, seq: u64, batch_id: &str, mut status: JobStatus) -> Result<Vec<ResultRow>, ApiError> {
        let mut refreshed = false;
        'links: loop {
            let urls = if status.download_urls.is_empty() {
                status.download_url.iter().cloned().collect::<Vec<_>>()
            } else {
                status.download_urls.clone()
            };
            if urls.is_empty() {
                return Err(ApiError::Malformed(format!(
                    "job {batch_id} completed without download_url"
                )));
            }
            let mut all = Vec::new();
            for url in &urls {
                let mut tries = 0;
                loop {
                    tries += 1;
                    let data = match self.call("download", seq, || self.api.download(url)).await {
                        Ok(d) => d,
                        Err(ApiError::LinkExpired(_)) if !refreshed => {
                            refreshed = true;
                            status = self.call("status", seq, || self.api.status(batch_id)).await?;
                            continue 'links;
                        }
                        Err(e) => return Err(e),
                    };
                    match results::parse(&data, self.api.max_result_bytes()) {
                        Ok(rows) => {
                            all.extend(rows);
                            break;
                        }
                        Err(e) => {
                            self.metrics.result_file_rejected();
                            warn!(error = %e, tries, %batch_id, "unusable result file");
                            if tries >= 2 {
                                return Err(ApiError::Malformed(e.to_string()));
                            }
                        }
                    }
                }
            }
            return Ok(all);
        }
    }
}

/// A fresh unguessable webhook token: 128 random bits, hex.
pub fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

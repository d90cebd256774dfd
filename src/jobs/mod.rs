//! Job lifecycle: submit a batch, learn when it finishes (polling on an
//! adaptive schedule, woken early by a webhook callback), download and
//! decode its results. Failed, timed-out and unreadable jobs are resubmitted
//! a bounded number of times; auth refusals are retried slowly forever
//! while the service reports itself unready.

pub mod poll;
pub mod results;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::api::retry::{decide, Backoff, RetryDecision};
use crate::api::{ApiClient, ApiError, ErrorClass, JobState, JobStatus};
use crate::config::ApiConfig;
use crate::decode::{match_key, IdentifierType};
use crate::metrics::Metrics;
use crate::server::Health;
use poll::DurationEstimator;
use results::{has_matches, Matches};

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
}

enum Attempt {
    Done(Arc<str>, HashMap<String, Matches>, Vec<String>),
    Rejected(String),
    Retry(String),
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
    async fn call<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, ApiError>
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
                Err(e) => match decide(
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
                },
            }
        }
    }

    /// Runs a job to its outcome.
    pub async fn run(self: Arc<Self>, spec: JobSpec) -> JobOutcome {
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_job_attempts {
            if attempt > 1 {
                self.metrics.job_resubmitted();
                info!(attempt, kind = spec.kind.as_str(), size = spec.ids.len(), reason = %last, "resubmitting job");
            }
            match self.attempt(&spec).await {
                Attempt::Done(batch_id, results, missing) => {
                    return JobOutcome::Done {
                        spec,
                        batch_id,
                        results,
                        missing,
                    }
                }
                Attempt::Rejected(message) => return JobOutcome::Rejected { spec, message },
                Attempt::Retry(why) => last = why,
            }
        }
        JobOutcome::Failed { spec, message: last }
    }

    async fn attempt(&self, spec: &JobSpec) -> Attempt {
        let token = self.webhook.as_ref().map(|_| new_token());
        let wake = Arc::new(Notify::new());
        let hook_url = match (&self.webhook, &token) {
            (Some((base, _)), Some(t)) => {
                self.wakers.lock().expect("wakers").insert(t.clone(), wake.clone());
                Some(format!("{base}/{t}"))
            }
            _ => None,
        };
        let result = self.submit_and_collect(spec, hook_url.as_deref(), &wake).await;
        if let Some(t) = token {
            self.wakers.lock().expect("wakers").remove(&t);
        }
        result
    }

    async fn submit_and_collect(&self, spec: &JobSpec, hook_url: Option<&str>, wake: &Notify) -> Attempt {
        let submitted = Instant::now();
        let batch_id: Arc<str> = match self
            .call("submit", || self.api.submit(spec.kind, &spec.ids, hook_url))
            .await
        {
            Ok(id) => id.into(),
            Err(ApiError::BadRequest(m)) => return Attempt::Rejected(m),
            Err(e) => return Attempt::Retry(format!("submit: {e}")),
        };
        self.metrics.job_submitted();
        debug!(%batch_id, size = spec.ids.len(), "job submitted");
        let status = match self.wait(&batch_id, submitted, wake).await {
            Ok(s) => s,
            Err(why) => return Attempt::Retry(why),
        };
        self.metrics.job_finished("completed", submitted.elapsed());
        self.estimator.lock().expect("estimator").observe(submitted.elapsed());
        match self.collect(spec, &batch_id, status).await {
            Ok((results, missing)) => Attempt::Done(batch_id, results, missing),
            Err(why) => Attempt::Retry(why),
        }
    }

    /// Polls until the job completes; `Err` for failed or timed out.
    async fn wait(&self, batch_id: &str, submitted: Instant, wake: &Notify) -> Result<JobStatus, String> {
        let mut index = 0u32;
        loop {
            let elapsed = submitted.elapsed();
            if elapsed >= self.cfg.job_timeout {
                self.metrics.job_finished("timed_out", elapsed);
                return Err(format!("job {batch_id} not finished within api.job_timeout"));
            }
            let delay = match &self.webhook {
                // With callbacks, poll rarely: the callback wakes us.
                Some((_, fallback)) => *fallback,
                None => {
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
            let status = match self.call("status", || self.api.status(batch_id)).await {
                Ok(s) => s,
                Err(e) => return Err(format!("status of {batch_id}: {e}")),
            };
            match status.state {
                JobState::Running => continue,
                JobState::Completed => return Ok(status),
                JobState::Failed => {
                    self.metrics.job_finished("failed", submitted.elapsed());
                    let msg = status.error_message.unwrap_or_else(|| "no error_message".into());
                    return Err(format!("job {batch_id} failed: {msg}"));
                }
            }
        }
    }

    /// Downloads and decodes the results of a completed job.
    async fn collect(
        &self,
        spec: &JobSpec,
        batch_id: &str,
        mut status: JobStatus,
    ) -> Result<(HashMap<String, Matches>, Vec<String>), String> {
        let mut found: HashMap<String, Matches> = HashMap::with_capacity(spec.ids.len());
        if status.result_count != Some(0) {
            let mut refreshed = false;
            loop {
                let urls = if status.download_urls.is_empty() {
                    status.download_url.iter().cloned().collect::<Vec<_>>()
                } else {
                    status.download_urls.clone()
                };
                if urls.is_empty() {
                    return Err(format!("job {batch_id} completed without download_url"));
                }
                match self.fetch_all(&urls).await {
                    Ok(map) => {
                        found = map;
                        break;
                    }
                    // A pre-signed link may expire: a fresh status gives fresh links.
                    Err(ApiError::LinkExpired(_)) if !refreshed => {
                        refreshed = true;
                        status = self
                            .call("status", || self.api.status(batch_id))
                            .await
                            .map_err(|e| format!("status of {batch_id}: {e}"))?;
                    }
                    Err(e) => return Err(format!("results of {batch_id}: {e}")),
                }
            }
        }
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
                None if status.result_count == Some(0) => {
                    results.insert(id.clone(), results::no_matches());
                }
                None => missing.push(id.clone()),
            }
        }
        self.metrics.credits_spent(credits);
        info!(%batch_id, submitted = spec.ids.len(), matched = credits, missing = missing.len(), credits_spent = credits, "job results");
        Ok((results, missing))
    }

    /// Downloads every part; a corrupt part is fetched once more.
    async fn fetch_all(&self, urls: &[String]) -> Result<HashMap<String, Matches>, ApiError> {
        let mut all = HashMap::new();
        for url in urls {
            let mut tries = 0;
            loop {
                tries += 1;
                let data = self.call("download", || self.api.download(url)).await?;
                match results::parse(&data, self.api.max_result_bytes()) {
                    Ok(map) => {
                        all.extend(map);
                        break;
                    }
                    Err(e) => {
                        self.metrics.result_file_rejected();
                        warn!(error = %e, tries, "unusable result file");
                        if tries >= 2 {
                            return Err(ApiError::Malformed(e.to_string()));
                        }
                    }
                }
            }
        }
        Ok(all)
    }
}

/// A fresh unguessable webhook token: 128 random bits, hex.
pub fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

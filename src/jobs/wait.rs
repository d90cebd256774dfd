//! Waiting for a job: status polls on the adaptive schedule of [`super::poll`]
//! (or rarely, when a webhook callback will wake the job), until the API
//! reports it completed or failed, or `api.job_timeout` passes. What is
//! learnt is the job's real duration, for the schedule of later jobs.

use std::time::Instant;

use tokio::sync::Notify;

use super::{poll, JobContext, JobError};
use crate::api::{Endpoint, JobState, JobStatus};

impl JobContext {
    /// Polls until the job completes; `Err` for failed or timed out.
    pub(super) async fn wait(
        &self,
        seq: u64,
        batch_id: &str,
        submitted: Instant,
        wake: &Notify,
        recovering: bool,
    ) -> Result<JobStatus, JobError> {
        let mut index = 0u32;
        let mut last_running = None;
        loop {
            let elapsed = submitted.elapsed();
            if elapsed >= self.cfg.job_timeout {
                self.metrics.job_finished("timed_out", elapsed);
                return Err(JobError::TimedOut {
                    batch_id: batch_id.into(),
                });
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
            let status = self
                .call(Endpoint::Status, seq, || self.api.status(batch_id))
                .await
                .map_err(|source| JobError::Status {
                    batch_id: batch_id.into(),
                    source,
                })?;
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
                    return Err(JobError::Failed {
                        batch_id: batch_id.into(),
                        message: status.error_message.unwrap_or_else(|| "no error_message".into()),
                    });
                }
            }
        }
    }
}

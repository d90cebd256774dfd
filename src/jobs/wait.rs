//! Waiting for a job: status polls on the adaptive schedule of [`super::poll`]
//! (or rarely, when a webhook callback will wake the job), until the API
//! reports it completed or failed, or its deadline (`api.job_timeout` after
//! the submit) passes. A status error that may pass is retried on the same
//! job until then: an accepted job is never given up for a transient
//! reason. What is learnt is the job's real duration, for the schedule of
//! later jobs. A callback only wakes the job: its status answer decides.

use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{poll, JobContext, JobError};
use crate::api::{Endpoint, JobState, JobStatus};
use crate::lifecycle::Phase;

/// When an accepted submit was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(super) at: Instant,
    pub(super) utc: chrono::DateTime<chrono::Utc>,
    /// Until its answer.
    pub(super) rtt: Option<Duration>,
}

impl Sent {
    /// How long after the send the API created the job, by its own
    /// `created_at`, bounded by the round trip (clocks may disagree).
    pub(super) fn accept_delay(&self, created_at: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        let rtt = self.rtt?;
        Some((created_at - self.utc).to_std().unwrap_or_default().min(rtt))
    }
}

impl JobContext {
    /// Polls `batch_id` until it completes; `Err` for failed, timed out,
    /// or a status the API refuses for good (404). The schedule runs from
    /// `from`; `sent`: this pod's own accepted submit, to learn from;
    /// `wake`: the webhook callback that wakes the wait.
    pub(super) async fn wait(
        &self,
        seq: u64,
        batch_id: &str,
        from: Instant,
        sent: Option<Sent>,
        wake: Option<&Notify>,
    ) -> Result<JobStatus, JobError> {
        let deadline = from + self.cfg.job_timeout;
        let learn = sent.is_some();
        let mut index = 0u32;
        let mut last_running = None;
        let mut last_asked = None;
        let idle = Notify::new();
        let wake = wake.unwrap_or(&idle);
        loop {
            let elapsed = from.elapsed();
            if elapsed >= self.cfg.job_timeout {
                self.phase(seq, Phase::Collecting);
                self.metrics.job_finished("timed_out", elapsed);
                return Err(JobError::TimedOut {
                    batch_id: batch_id.into(),
                });
            }
            let delay = match &self.webhook {
                // With callbacks, poll rarely: the callback wakes us.
                Some((_, fallback)) if learn => *fallback,
                _ => {
                    // Polls keep to their schedule from when the last one
                    // was sent: its answer's latency does not add to the step.
                    let at = last_asked.unwrap_or(elapsed);
                    let budget = poll::Budget {
                        initial: self.cfg.poll_initial,
                        min_step: poll::min_step(self.cfg.max_active_jobs, self.cfg.requests_per_minute),
                        max: self.cfg.poll_max,
                    };
                    let est = self.estimator.lock().expect("estimator");
                    let d = poll::next_delay(index, at, &est, &budget);
                    (at + d).saturating_sub(elapsed)
                }
            };
            let delay = delay.min(self.cfg.job_timeout - elapsed);
            let unlearnt = self.estimator.lock().expect("estimator").is_empty();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wake.notified() => self.metrics.webhook_wakeup(),
                // The first job's duration is in: plan the next poll with it.
                _ = self.learnt.notified(), if unlearnt => continue,
            }
            index += 1;
            failpoint!("wait.poll");
            let asked = from.elapsed();
            last_asked = Some(asked);
            let status = match self
                .persist(Endpoint::Status, seq, deadline, || self.api.status(batch_id))
                .await
            {
                Ok(s) => s,
                // Retried until the deadline; the loop reports the timeout.
                Err(e) if super::may_pass(&e) => continue,
                Err(source) => {
                    self.phase(seq, Phase::Collecting);
                    return Err(JobError::Status {
                        batch_id: batch_id.into(),
                        source,
                    });
                }
            };
            if status.unknown_word {
                self.metrics.unknown_status();
            }
            if status.state != JobState::Running {
                // It no longer holds one of the key's slots, whatever
                // remains to be done with its results.
                self.phase(seq, Phase::Collecting);
                tracing::debug!(
                    batch_id,
                    polls = index,
                    seen_after_ms = asked.as_millis() as u64,
                    "job ended at the API"
                );
            }
            match status.state {
                JobState::Running => last_running = Some(asked),
                JobState::Completed => {
                    self.metrics.job_finished("completed", from.elapsed());
                    if learn {
                        self.learn(&status, sent, last_running, asked);
                    }
                    return Ok(status);
                }
                JobState::Failed => {
                    self.metrics.job_finished("failed", from.elapsed());
                    return Err(JobError::Failed {
                        batch_id: batch_id.into(),
                        message: status.error_message.unwrap_or_else(|| "no error_message".into()),
                    });
                }
            }
        }
    }

    /// Learns the job's real duration, not when this pod happened to look:
    /// the server's own timestamps, else the middle of the last "running"
    /// and the first "completed" observation.
    fn learn(&self, status: &JobStatus, sent: Option<Sent>, last_running: Option<Duration>, asked: Duration) {
        let observed = status.server_duration.unwrap_or_else(|| match last_running {
            Some(r) => (r + asked) / 2,
            None => asked,
        });
        let mut est = self.estimator.lock().expect("estimator");
        let first = est.is_empty();
        est.observe(observed);
        if let Some(d) = sent.zip(status.created_at).and_then(|(s, c)| s.accept_delay(c)) {
            est.observe_accept(d);
        }
        if first {
            self.learnt.notify_waiters();
        }
    }
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

//! Waiting for a job: status polls on the adaptive schedule of [`super::poll`]
//! (or rarely, when a webhook callback will wake the job), until the API
//! reports it completed or failed, or its deadline (`api.job_timeout` after
//! the submit) passes. A status error that may pass is retried on the same
//! job until then: an accepted job is never given up for a transient
//! reason. What is learnt is the job's real duration, for the schedule of
//! later jobs. A steady job's first poll, and a webhook callback, is most
//! likely its end: the dispatcher hears of it then ([`JobEvent::Due`]) and
//! starts the next batch without waiting for the status answer.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::Notify;

use super::{poll, JobContext, JobError, JobEvent, Sent};
use crate::api::{Endpoint, JobState, JobStatus};

impl JobContext {
    /// Polls until the job completes; `Err` for failed, timed out, or a
    /// status the API refuses for good (404). The schedule runs from
    /// `submitted`; `sent`: the submit this pod sent, to learn from.
    pub(super) async fn wait(
        &self,
        seq: u64,
        batch_id: &str,
        submitted: Instant,
        sent: Option<Sent>,
        wake: &Notify,
        learn: bool,
    ) -> Result<JobStatus, JobError> {
        let deadline = submitted + self.cfg.job_timeout;
        let mut index = 0u32;
        let mut last_running = None;
        let mut last_asked = None;
        // Told the dispatcher the job is due (by the schedule, or by a
        // callback); not yet confirmed.
        let (mut due, mut scheduled, mut called_back) = (false, false, false);
        loop {
            let elapsed = submitted.elapsed();
            if elapsed >= self.cfg.job_timeout {
                let _ = self.events.send(JobEvent::Ended { seq });
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
                    let from = last_asked.unwrap_or(elapsed);
                    let step = poll::min_step(self.cfg.max_active_jobs, self.cfg.requests_per_minute);
                    let est = self.estimator.lock().expect("estimator");
                    let d = poll::next_delay(index, from, &est, self.cfg.poll_initial, step, self.cfg.poll_max);
                    (from + d).saturating_sub(elapsed)
                }
            };
            let delay = delay.min(self.cfg.job_timeout - elapsed);
            let (unlearnt, anticipate) = {
                let est = self.estimator.lock().expect("estimator");
                let first = index == 0 && learn && self.webhook.is_none();
                (est.is_empty(), first && est.steady())
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wake.notified() => {
                    self.metrics.webhook_wakeup();
                    // The API called back: the job most likely ended.
                    if learn && !due && self.callbacks_end_jobs.load(Ordering::Relaxed) {
                        due = self.events.send(JobEvent::Due { seq }).is_ok();
                        called_back = due;
                    }
                }
                // The first job's duration is in: plan the next poll with it.
                _ = self.learnt.notified(), if unlearnt => continue,
            }
            if anticipate && !due {
                due = self.events.send(JobEvent::Due { seq }).is_ok();
                scheduled = due;
            }
            index += 1;
            let asked = submitted.elapsed();
            last_asked = Some(asked);
            let status = match self
                .persist(Endpoint::Status, seq, deadline, || self.api.status(batch_id))
                .await
            {
                Ok(s) => s,
                // Retried until the deadline; the loop reports the timeout.
                Err(e) if super::may_pass(&e) => continue,
                Err(source) => {
                    return Err(JobError::Status {
                        batch_id: batch_id.into(),
                        source,
                    })
                }
            };
            if status.unknown_word {
                self.metrics.unknown_status();
            }
            if std::mem::take(&mut due) {
                let running = status.state == JobState::Running;
                let (scheduled, called_back) = (std::mem::take(&mut scheduled), std::mem::take(&mut called_back));
                self.settle_due(seq, batch_id, running, scheduled, called_back);
            }
            if status.state != JobState::Running {
                let _ = self.events.send(JobEvent::Ended { seq });
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
                    if learn {
                        // Learn the job's real duration, not when we happened to
                        // look: the server's own timestamps, else the middle of
                        // the last "running" and first "completed" observation.
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

    /// The status answer after [`JobEvent::Due`]: a job still running
    /// takes its slot back; a first poll (`scheduled`) learns whether it
    /// came early; a callback that came early ends lending by callbacks.
    fn settle_due(&self, seq: u64, batch_id: &str, running: bool, scheduled: bool, called_back: bool) {
        if running {
            let _ = self.events.send(JobEvent::StillRunning { seq });
            if called_back && self.callbacks_end_jobs.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    batch_id,
                    "a webhook callback came while its job was still running: callbacks no longer start the next batch before the status confirms the end"
                );
            }
        }
        if scheduled {
            let mut est = self.estimator.lock().expect("estimator");
            if running {
                est.first_poll_early();
            } else {
                est.first_poll_on_time();
            }
        }
        self.metrics.job_due(running);
    }
}

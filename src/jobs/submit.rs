//! Submitting a job: every request is written ahead to the journal (the
//! identifiers, the owner, when it leaves) and leaves only once Kafka has
//! that record and this pod's lease holds, so that whatever happens next
//! (a crash, a lost answer) the job can be found by its content. An error
//! that proves nothing was created (a 429, a refused connection, a refused
//! key) is retried under the retry policy; one after which the API may
//! have created the job (a timeout, a cut connection, a 5xx, an
//! unreadable success) is never retried blindly: the job goes to
//! [`super::lost`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, Instrument, Span};

use super::wait::Sent;
use super::{now_ms, JobContext, JobEvent};
use crate::api::{ApiError, Endpoint};
use crate::lifecycle::{JobId, Record, Stage};
use crate::telemetry;

/// What submitting a job came to.
pub(super) enum Submitted {
    /// The API accepted it (its answer said so).
    Accepted {
        /// The API's id.
        batch_id: Arc<str>,
        /// When the accepted request was sent.
        sent: Sent,
    },
    /// The answer was lost: the job may exist.
    Lost {
        /// When the request left (as written ahead).
        sent_at_ms: i64,
        /// No answer came at all (a timeout, a cut connection, a gateway's
        /// 502/503/504): the request may still be on its way.
        unanswered: bool,
    },
    /// The API refused it (400, or 404/405/415: a wrong base URL).
    Rejected(u16, String),
    /// Requests that created nothing failed after every retry.
    GaveUp(ApiError),
    /// Not sent: the record written ahead was taken too late to be sure no
    /// other pod has these identifiers now (see [`JobContext::stale`]).
    NotSent(Withheld),
}

/// Why a submit written ahead was not sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub(super) enum Withheld {
    /// The record was taken after the lease ran out.
    #[error("the record written ahead was taken after this pod's lease ran out")]
    LateWrite,
    /// Partitions were revoked while the job waited.
    #[error("partitions were revoked while the job waited to submit")]
    Revoked,
}

impl Withheld {
    /// A bounded label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::LateWrite => "late_write",
            Self::Revoked => "revoked",
        }
    }
}

/// What one request came to, inside the retry loop: errors that prove
/// nothing was created stay errors (the policy retries them).
enum Answer {
    Accepted(Arc<str>, Sent),
    Lost { sent_at_ms: i64, unanswered: bool },
    NotSent(Withheld),
}

/// Whether the API may have created the job despite `e`, and whether an
/// answer came at all (`Some(false)`: it did; `Some(true)`: none did).
pub(super) fn maybe_created(e: &ApiError) -> Option<bool> {
    match e {
        ApiError::Timeout | ApiError::Transport(_) => Some(true),
        ApiError::Server { status: 502..=504, .. } => Some(true),
        ApiError::Server { .. } | ApiError::Malformed(_) => Some(false),
        _ => None,
    }
}

impl JobContext {
    /// Partitions revoked (or lost) so far on this pod.
    pub(super) fn revocations(&self) -> u64 {
        self.tracker.lock().expect("tracker").revocations()
    }

    /// Why a submit whose record was written ahead from `leased` on must
    /// not leave now, if it must not: the write took longer than the lease
    /// (a pod cut off from Kafka whose write is taken once it reconnects:
    /// meanwhile its partitions, and the records of this job, may have
    /// gone to a peer that did not see the record and submitted them), or
    /// a partition was revoked since the job started (`revocations`).
    fn stale(&self, leased: Instant, revocations: u64) -> Option<Withheld> {
        if leased.elapsed() >= crate::share::LEASE {
            Some(Withheld::LateWrite)
        } else if self.revocations() != revocations {
            Some(Withheld::Revoked)
        } else {
            None
        }
    }

    /// Waits until this pod's lease holds (its last heartbeat acknowledged
    /// recently): a pod cut off from Kafka submits nothing for jobs another
    /// pod may take over.
    async fn lease(&self) {
        let team = self.store.team();
        let mut waited = false;
        while !team.lease_ok(Instant::now()) {
            if !waited {
                debug!("waiting for this pod's heartbeat to reach the store topic before submitting");
                waited = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits job `job` (attempt `attempt`), writing each request ahead;
    /// `rec` follows what was written.
    pub(super) async fn submit(
        &self,
        seq: u64,
        job: &JobId,
        rec: &mut Record,
        attempt: u32,
        hook_url: Option<&str>,
        revocations: u64,
    ) -> Submitted {
        let spec = match rec.spec() {
            Some(s) => s,
            None => return Submitted::Rejected(400, "unknown identifier type".into()),
        };
        let policy = self.policy(Endpoint::Submit);
        let hooks = super::Hooks { ctx: self, seq };
        let written = Mutex::new(rec.clone());
        let span = telemetry::request("submit");
        telemetry::attr(&span, "attempt", i64::from(attempt));
        telemetry::attr(&Span::current(), "attempt", i64::from(attempt));
        let result = crate::api::with_retries(&policy, &hooks, Endpoint::Submit, || async {
            // The rate limiter's wait comes before the lease and the
            // record: the request leaves right after them.
            self.api.ready().await;
            self.lease().await;
            let leased = Instant::now();
            let sent_at_ms = now_ms();
            let ahead = {
                let mut w = written.lock().expect("record");
                *w = w.at(Stage::Submitting { attempt, sent_at_ms });
                w.clone()
            };
            self.store.journal(job, &ahead).await;
            if let Some(why) = self.stale(leased, revocations) {
                return Ok(Answer::NotSent(why));
            }
            failpoint!("submit.before_request");
            let at = Instant::now();
            let utc = chrono::Utc::now();
            match self.api.submit(spec.kind, &spec.ids, hook_url).await {
                Ok(s) => {
                    failpoint!("submit.after_answer");
                    let sent = Sent {
                        at,
                        utc,
                        rtt: Some(at.elapsed()),
                    };
                    let _ = self.events.send(JobEvent::Accepted {
                        seq,
                        remaining: s.remaining,
                        sent_ms: sent_at_ms,
                    });
                    Ok(Answer::Accepted(Arc::from(s.batch_id), sent))
                }
                Err(e) => match maybe_created(&e) {
                    Some(unanswered) => {
                        self.metrics.api_retry(Endpoint::Submit.as_str(), e.label());
                        tracing::warn!(%job, error = %e, "a submit's answer was lost; the job is looked for by its content before anything is submitted again");
                        Ok(Answer::Lost { sent_at_ms, unanswered })
                    }
                    None => Err(e),
                },
            }
        })
        .instrument(span.clone())
        .await;
        match &result {
            Ok(Answer::Accepted(batch_id, _)) => telemetry::attr(&span, "batch_id", batch_id.to_string()),
            Ok(Answer::Lost { .. }) => telemetry::failed(&span, &"the answer was lost"),
            Ok(Answer::NotSent(why)) => telemetry::failed(&span, &why.to_string()),
            Err(e) => telemetry::failed(&span, e),
        }
        *rec = written.into_inner().expect("record");
        match result {
            Ok(Answer::Accepted(batch_id, sent)) => {
                *rec = self.accepted(job, rec, &batch_id).await;
                failpoint!("submit.after_journal");
                self.metrics.job_submitted();
                self.phase(seq, crate::lifecycle::Phase::Running);
                debug!(%job, %batch_id, size = spec.ids.len(), "job submitted");
                Submitted::Accepted { batch_id, sent }
            }
            Ok(Answer::Lost { sent_at_ms, unanswered }) => Submitted::Lost { sent_at_ms, unanswered },
            Ok(Answer::NotSent(why)) => Submitted::NotSent(why),
            Err(ApiError::BadRequest(m)) => Submitted::Rejected(400, m),
            Err(ApiError::NotFound(m)) => Submitted::Rejected(404, m),
            Err(ApiError::Unexpected {
                status: s @ (405 | 415),
                message,
            }) => Submitted::Rejected(s, message),
            Err(e) => Submitted::GaveUp(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_after_which_the_job_may_exist_are_lost_answers() {
        let server = |status| ApiError::Server {
            status,
            message: String::new(),
        };
        assert_eq!(maybe_created(&ApiError::Timeout), Some(true));
        assert_eq!(maybe_created(&ApiError::Transport("reset".into())), Some(true));
        assert_eq!(maybe_created(&server(504)), Some(true), "a gateway gave up waiting");
        assert_eq!(maybe_created(&server(502)), Some(true));
        assert_eq!(maybe_created(&server(500)), Some(false), "the API answered");
        assert_eq!(maybe_created(&ApiError::Malformed("body".into())), Some(false));
        for created_nothing in [
            ApiError::Connect("refused".into()),
            ApiError::RateLimited {
                retry_after: None,
                message: String::new(),
            },
            ApiError::Unauthorized(String::new()),
            ApiError::BadRequest(String::new()),
        ] {
            assert_eq!(maybe_created(&created_nothing), None, "{created_nothing:?}");
        }
    }
}

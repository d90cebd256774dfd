//! What a job run reports: its outcome, the events it sends while it runs,
//! and why an attempt failed. The dispatcher's whole vocabulary about jobs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Adoption, ResultRow};
use crate::api::ApiError;
use crate::model::{JobSpec, Matches};

/// Why a job attempt (or a recovery) did not produce results.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JobError {
    /// The submit failed after its retries.
    #[error("submit: {0}")]
    Submit(ApiError),
    /// A status request failed after its retries.
    #[error("status of {batch_id}: {source}")]
    Status {
        /// The job.
        batch_id: Arc<str>,
        /// The last error.
        source: ApiError,
    },
    /// The API reports the job failed.
    #[error("job {batch_id} failed: {message}")]
    Failed {
        /// The job.
        batch_id: Arc<str>,
        /// The API's `error_message`.
        message: String,
    },
    /// Not finished within `api.job_timeout`.
    #[error("job {batch_id} not finished within api.job_timeout")]
    TimedOut {
        /// The job.
        batch_id: Arc<str>,
    },
    /// The results could not be downloaded or read.
    #[error("results of {batch_id}: {source}")]
    Results {
        /// The job.
        batch_id: Arc<str>,
        /// Why.
        source: ApiError,
    },
}

impl JobError {
    /// The job concerned, once the API accepted it.
    pub(crate) fn batch_id(&self) -> Option<&str> {
        match self {
            Self::Submit(_) => None,
            Self::Status { batch_id, .. }
            | Self::Failed { batch_id, .. }
            | Self::TimedOut { batch_id }
            | Self::Results { batch_id, .. } => Some(batch_id),
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub(crate) enum JobOutcome {
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
        /// The job was adopted (another pod's, or one a crash forgot).
        adopted: bool,
    },
    /// The API refused the submit: 400 (the request, or an identifier in
    /// it), or 404/405/415 (the endpoint: a wrong base URL).
    Rejected {
        /// The batch.
        spec: JobSpec,
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// Every attempt failed.
    Failed {
        /// The batch.
        spec: JobSpec,
        /// The last failure.
        error: JobError,
    },
    /// An adopted job whose identifiers were unknown finished: its rows.
    Recovered {
        /// The job.
        batch_id: Arc<str>,
        /// Every row of its result file (empty when it had no matches file).
        rows: Vec<ResultRow>,
    },
    /// An adopted job could not be used (failed, forgotten, unreadable).
    RecoveryFailed {
        /// The job.
        batch_id: Arc<str>,
        /// Why.
        error: JobError,
    },
    /// Start-up reconciliation: the jobs to adopt.
    Reconciled(Vec<Adoption>),
    /// An early start's submit got 429 (the job whose slot it took still
    /// runs): nothing was submitted; the batch waits for a confirmed slot.
    NotStarted {
        /// The batch.
        spec: JobSpec,
    },
}

/// What running jobs tell the dispatcher while they run.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// The API accepted job `seq` as `batch_id`.
    Submitted {
        /// The dispatcher's job number.
        seq: u64,
        /// The API's id.
        batch_id: Arc<str>,
        /// The API said the key has no active-job slot left, until about
        /// this long from now (`x-ratelimit-remaining: 0`, `-reset`).
        key_full_for: Option<Duration>,
    },
    /// The API reports job `seq` completed or failed (or it timed out): it
    /// no longer holds one of the key's active-job slots, whatever remains
    /// to be done with its results.
    Ended {
        /// The dispatcher's job number.
        seq: u64,
    },
    /// Job `seq` has most likely ended: it is steady and its first poll is
    /// going out now, when jobs like it have ended, or a webhook callback
    /// came for it. Its slot may be given to the next batch at once,
    /// before the poll's answer confirms it (an early start: if that
    /// job still runs, the next one's submit gets 429 and it ends
    /// [`JobOutcome::NotStarted`]).
    Due {
        /// The dispatcher's job number.
        seq: u64,
    },
    /// The first poll after [`JobEvent::Due`] found job `seq` still
    /// running: it holds its slot again.
    StillRunning {
        /// The dispatcher's job number.
        seq: u64,
    },
    /// Job `seq` is about to submit its batch again: it holds a slot again.
    Resubmitting {
        /// The dispatcher's job number.
        seq: u64,
    },
    /// A submit of job `seq` got 429.
    RateLimited {
        /// The dispatcher's job number.
        seq: u64,
    },
}

//! What a job run reports: its outcome, the events it sends while it runs,
//! and why an attempt failed. The dispatcher's whole vocabulary about jobs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::ApiError;
use crate::lifecycle::Phase;
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
    /// A submit whose answer was lost could not be told created or not
    /// within `api.job_timeout` (a job of the same size that never
    /// completed, a listing that never became complete).
    #[error("a lost submit answer stayed undecided for api.job_timeout: {0}")]
    Undecided(&'static str),
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
            Self::Submit(_) | Self::Undecided(_) => None,
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
        /// Another pod's job: its owner stores the results and closes it.
        followed: bool,
    },
    /// The API refused the submit: 400 (the request, or an identifier in
    /// it), or 404/405/415 (the endpoint: a wrong base URL). Nothing was
    /// created.
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
    /// Another pod's job ended without results for this pod (it failed
    /// there, or was proven never created): its identifiers go through
    /// jobs of this pod.
    Released,
}

/// What running jobs tell the dispatcher while they run.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// Job `seq` moved to `phase` (see [`Phase`]: whether it holds a slot).
    Phase {
        /// The dispatcher's job number.
        seq: u64,
        /// Where it is now.
        phase: Phase,
    },
    /// The API accepted a submit of job `seq` (its answer said so): what
    /// it said of the key's active-job slots.
    Accepted {
        /// The dispatcher's job number.
        seq: u64,
        /// `x-ratelimit-remaining`: slots left after this job.
        remaining: Option<u32>,
        /// When the submit left (ms since the epoch).
        sent_ms: i64,
    },
    /// A submit of job `seq` got 429.
    RateLimited {
        /// The dispatcher's job number.
        seq: u64,
    },
}

//! A job's life, as a state machine: the stages the job journal records
//! (one record per transition, keyed by the job's id on the store topic),
//! the rule every pod applies to those records in log order, and the
//! phases of a job as the dispatcher counts its slots. Pure: no I/O.
//!
//! ```text
//!  planned ──► submitting ──► accepted ──► completed ──► closed ──► (tombstone)
//!     ▲            │  ▲            │            published, failed,
//!     │   answer   │  │ proven by  │ failed /   rejected, released
//!     │    lost    ▼  │ content    │ timed out
//!     │        unresolved          │
//!     └──────── (next attempt) ◄───┘
//! ```
//!
//! A record is written *ahead*: `submitting` before each submit request
//! leaves, so that a crash or a lost answer always leaves a record that
//! names the identifiers, the owner and when the request was sent. Only
//! the owner of a job writes its records; another pod takes a job over
//! with a *claim* (the same stage, a new owner, naming the old one), and
//! of two claims the first in the log wins ([`apply`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{IdentifierType, JobSpec};

/// A job's id: a UUID this connector chose before its first submit (the
/// journal's key; the API's `batch_id` is known only once accepted).
pub(crate) type JobId = Arc<str>;

/// A new job id.
pub(crate) fn new_job_id() -> JobId {
    Arc::from(uuid::Uuid::new_v4().to_string())
}

/// Where a job is, durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub(crate) enum Stage {
    /// A submit request is about to leave (or left): submission number
    /// `attempt` (1 for the first), sent at `sent_at_ms` (wall clock, ms).
    Submitting {
        /// The job's submission number.
        attempt: u32,
        /// Just before the request left.
        sent_at_ms: i64,
    },
    /// The API accepted submission `attempt` as `batch_id`: its answer
    /// said so, or its content proved it.
    Accepted {
        /// The job's submission number.
        attempt: u32,
        /// The API's id.
        batch_id: String,
        /// When this connector learnt it.
        at_ms: i64,
    },
    /// The API reports `batch_id` completed and its results were read:
    /// `credits` billed.
    Completed {
        /// The job's submission number.
        attempt: u32,
        /// The API's id.
        batch_id: String,
        /// Matched identifiers (one credit each).
        credits: u64,
        /// When.
        at_ms: i64,
    },
    /// The job ended; its record is removed (a tombstone) a while later.
    Closed {
        /// How it ended.
        outcome: Outcome,
        /// The API job whose results it published, if any.
        batch_id: Option<String>,
        /// When.
        at_ms: i64,
    },
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Its results are durable in the store.
    Published,
    /// Every submission failed (its records were dead-lettered).
    Failed,
    /// The API refused the submit (400): nothing was created.
    Rejected,
    /// Nothing was created, and nobody waits for it any more (its
    /// identifiers go through other jobs).
    Released,
}

impl Outcome {
    /// A bounded label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Released => "released",
        }
    }
}

/// One journal record: the job's identifiers, its owner and its stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// `business_email` or `profile_url`.
    pub(crate) identifier_type: String,
    /// The identifiers (empty once closed: nothing waits for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ids: Vec<String>,
    /// The member that drives the job.
    pub(crate) owner: String,
    /// The record's revision: each transition and each claim writes the
    /// next one, so that a record read again (the tail reading back what
    /// this pod wrote) never takes the job back to an older stage.
    #[serde(default)]
    pub(crate) rev: u64,
    /// A claim: the owner this record takes the job over from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) claimed_from: Option<String>,
    /// API jobs of earlier submissions (failed or timed out): never
    /// mistaken for another job's lost submit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) earlier: Vec<String>,
    /// Where it is.
    #[serde(flatten)]
    pub(crate) stage: Stage,
}

impl Record {
    /// A new job's first record: submission 1 about to leave.
    pub(crate) fn submitting(spec: &JobSpec, owner: &str, sent_at_ms: i64) -> Self {
        Self {
            identifier_type: spec.kind.as_str().into(),
            ids: spec.ids.clone(),
            owner: owner.into(),
            rev: 1,
            claimed_from: None,
            earlier: Vec::new(),
            stage: Stage::Submitting { attempt: 1, sent_at_ms },
        }
    }

    /// The identifier type, when it is one this version knows.
    pub(crate) fn kind(&self) -> Option<IdentifierType> {
        IdentifierType::ALL
            .into_iter()
            .find(|k| k.as_str() == self.identifier_type)
    }

    /// What it covers.
    pub(crate) fn spec(&self) -> Option<JobSpec> {
        Some(JobSpec {
            kind: self.kind()?,
            ids: self.ids.clone(),
        })
    }

    /// The same job at `stage`.
    pub(crate) fn at(&self, stage: Stage) -> Self {
        let ids = if matches!(stage, Stage::Closed { .. }) {
            Vec::new()
        } else {
            self.ids.clone()
        };
        Self {
            ids,
            claimed_from: None,
            rev: self.rev + 1,
            stage,
            ..self.clone()
        }
    }

    /// A claim of this job by `owner`.
    pub(crate) fn claimed_by(&self, owner: &str) -> Self {
        Self {
            owner: owner.into(),
            claimed_from: Some(self.owner.clone()),
            rev: self.rev + 1,
            ..self.clone()
        }
    }

    /// The API job it is accepted as (or completed, or published), if any.
    pub(crate) fn batch_id(&self) -> Option<&str> {
        match &self.stage {
            Stage::Accepted { batch_id, .. } | Stage::Completed { batch_id, .. } => Some(batch_id),
            Stage::Closed { batch_id, .. } => batch_id.as_deref(),
            Stage::Submitting { .. } => None,
        }
    }

    /// Still in flight (not closed).
    pub(crate) fn in_flight(&self) -> bool {
        !matches!(self.stage, Stage::Closed { .. })
    }

    /// The submission number it is at (0 when closed).
    pub(crate) fn attempt(&self) -> u32 {
        match &self.stage {
            Stage::Submitting { attempt, .. } | Stage::Accepted { attempt, .. } | Stage::Completed { attempt, .. } => {
                *attempt
            }
            Stage::Closed { .. } => 0,
        }
    }
}

/// What applying a record to the journal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The record is the job's state now.
    Taken,
    /// The job is gone (a tombstone).
    Removed,
    /// The record was written by a pod that does not own the job (a claim
    /// that came second, a zombie's late write): the state is unchanged.
    Ignored,
}

/// The rule every pod applies, in log order, to the records of one job:
/// a tombstone removes it; a record of a job not known (new, or whose
/// earlier records were compacted away) is taken unless the job was
/// `recently_closed` (a late write must not bring it back); otherwise a
/// record is taken only from the job's owner (at the same revision or a
/// later one: the same record read again changes nothing, an older one is
/// stale), or as a claim of a later revision naming the owner it takes
/// over from. So of two claims the first wins, and once a job changed
/// hands its old owner's writes change nothing.
pub(crate) fn apply(current: Option<&Record>, next: Option<&Record>, recently_closed: bool) -> Applied {
    let Some(next) = next else {
        return Applied::Removed;
    };
    match current {
        None if recently_closed => Applied::Ignored,
        None => Applied::Taken,
        Some(cur) if next.claimed_from.is_none() && next.owner == cur.owner && next.rev >= cur.rev => Applied::Taken,
        Some(cur) if next.claimed_from.as_deref() == Some(cur.owner.as_str()) && next.rev > cur.rev => Applied::Taken,
        Some(_) => Applied::Ignored,
    }
}

/// A running job as the dispatcher sees it, for its slots: a job holds
/// one of the key's active-job slots from before its submit leaves until
/// the API reports it ended, and while a lost answer is unresolved (the
/// job may be running at the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started; its first journal record is not yet acknowledged.
    Planned,
    /// A submit request is out, or about to leave.
    Submitting,
    /// The submit's answer was lost: resolved by content.
    Unresolved,
    /// Accepted: running at the API.
    Running,
    /// Ended at the API: its results are read (or it is given up).
    Collecting,
    /// Another pod's job (or one closed a moment ago): waited for, its
    /// results read when they are in.
    Following,
}

/// A phase change the job table refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from:?} to {to:?}")]
pub(crate) struct Invalid {
    /// From.
    pub(crate) from: Phase,
    /// To.
    pub(crate) to: Phase,
}

impl Phase {
    /// Whether the job holds one of the key's active-job slots.
    pub(crate) fn holds_slot(self) -> bool {
        matches!(
            self,
            Self::Planned | Self::Submitting | Self::Unresolved | Self::Running
        )
    }

    /// The phase a job moves to, if that move is part of its life.
    pub(crate) fn to(self, to: Phase) -> Result<Phase, Invalid> {
        use Phase::*;
        let ok = match (self, to) {
            (Planned, Submitting) => true,
            // A retried request, an answer lost, an acceptance (answered or
            // proven), a submit given up.
            (Submitting, Submitting | Unresolved | Running | Collecting) => true,
            // Proven ours, or proven never created (submitted again), or
            // undecided for too long (given up like a timed-out job).
            (Unresolved, Running | Submitting | Collecting) => true,
            (Running, Collecting) => true,
            // A failed or timed-out job is submitted again.
            (Collecting, Submitting) => true,
            // A job taken over (claimed) is where its journal says.
            (Following, _) => true,
            _ => false,
        };
        if ok {
            Ok(to)
        } else {
            Err(Invalid { from: self, to })
        }
    }

    /// The phase a job resumed from its journal record starts in.
    pub(crate) fn of(stage: &Stage) -> Phase {
        match stage {
            Stage::Submitting { .. } => Phase::Unresolved,
            Stage::Accepted { .. } => Phase::Running,
            Stage::Completed { .. } | Stage::Closed { .. } => Phase::Collecting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            kind: IdentifierType::BusinessEmail,
            ids: vec!["a@x.co".into(), "b@x.co".into()],
        }
    }

    fn accepted(r: &Record, batch: &str) -> Record {
        r.at(Stage::Accepted {
            attempt: 1,
            batch_id: batch.into(),
            at_ms: 2,
        })
    }

    #[test]
    fn records_round_trip_and_closed_ones_drop_their_identifiers() {
        let r = Record::submitting(&spec(), "pod-a", 1);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""stage":"submitting""#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert_eq!(r.spec(), Some(spec()));
        let closed = r.at(Stage::Closed {
            outcome: Outcome::Published,
            batch_id: Some("b1".into()),
            at_ms: 3,
        });
        assert!(closed.ids.is_empty() && !closed.in_flight());
        assert_eq!(closed.batch_id(), Some("b1"));
        let back: Record = serde_json::from_str(&serde_json::to_string(&closed).unwrap()).unwrap();
        assert_eq!(back, closed);
    }

    #[test]
    fn only_the_owner_writes_and_the_first_claim_wins() {
        let a = Record::submitting(&spec(), "pod-a", 1);
        assert_eq!(apply(None, Some(&a), false), Applied::Taken, "a new job");
        let a_accepted = accepted(&a, "b1");
        assert_eq!(apply(Some(&a), Some(&a_accepted), false), Applied::Taken);
        assert_eq!(
            apply(Some(&a_accepted), Some(&a_accepted), false),
            Applied::Taken,
            "the same record read again"
        );
        assert_eq!(
            apply(Some(&a_accepted), Some(&a), false),
            Applied::Ignored,
            "an older record read back after a newer one was applied"
        );
        let by_b = a.claimed_by("pod-b");
        let by_c = a.claimed_by("pod-c");
        assert_eq!(apply(Some(&a), Some(&by_b), false), Applied::Taken, "a claim");
        assert_eq!(
            apply(Some(&by_b), Some(&by_c), false),
            Applied::Ignored,
            "the second claim names an owner that is no longer it"
        );
        assert_eq!(
            apply(Some(&by_b), Some(&accepted(&a, "b9")), false),
            Applied::Ignored,
            "the old owner's late write changes nothing"
        );
        let b_accepts = accepted(&by_b, "b2");
        assert_eq!(
            apply(Some(&by_b), Some(&b_accepts), false),
            Applied::Taken,
            "the new owner goes on"
        );
        assert_eq!(apply(Some(&b_accepts), None, false), Applied::Removed);
        assert_eq!(
            apply(None, Some(&a), true),
            Applied::Ignored,
            "a late write does not bring a closed job back"
        );
    }

    #[test]
    fn phases_follow_the_life_and_only_some_hold_a_slot() {
        use Phase::*;
        let life = [
            Planned, Submitting, Unresolved, Running, Collecting, Submitting, Running, Collecting,
        ];
        for w in life.windows(2) {
            assert_eq!(w[0].to(w[1]), Ok(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(Running.to(Submitting).is_err(), "a running job is not submitted again");
        assert!(Collecting.to(Running).is_err());
        assert!(Planned.to(Running).is_err(), "nothing runs that was not submitted");
        for p in [Submitting, Unresolved, Running, Collecting] {
            assert_eq!(Following.to(p), Ok(p), "a claimed job is where its journal says");
        }
        let holding: Vec<Phase> = [Planned, Submitting, Unresolved, Running, Collecting, Following]
            .into_iter()
            .filter(|p| p.holds_slot())
            .collect();
        assert_eq!(holding, [Planned, Submitting, Unresolved, Running]);
        assert_eq!(
            Phase::of(&Stage::Submitting {
                attempt: 1,
                sent_at_ms: 0
            }),
            Unresolved,
            "a job resumed at submitting lost its answer"
        );
    }
}

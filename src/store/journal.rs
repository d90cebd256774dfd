//! The job journal in memory: every job of this key the store topic knows
//! (open ones with the identifiers they cover, done ones for the
//! reconciliation window), so that a pod can tell a job nobody tracks from
//! one another pod runs, and attach an identifier to the job already
//! resolving it instead of paying for it again.

use std::collections::HashMap;
use std::sync::Arc;

use super::record::JobEntry;
use crate::model::{IdentifierType, JobSpec};

/// An open job: accepted by the API, results not yet in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenJob {
    /// The API's id.
    pub(crate) batch_id: Arc<str>,
    /// What it covers.
    pub(crate) spec: JobSpec,
    /// When it was accepted (ms since the epoch).
    pub(crate) at_ms: i64,
}

/// What the journal knows of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Journaled {
    /// Accepted, results not yet stored.
    Open(OpenJob),
    /// Its results are stored.
    Done,
    /// Not in the journal.
    Unknown,
}

/// Jobs by batch id, and open jobs by the identifiers they cover.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    jobs: HashMap<Arc<str>, JobEntry>,
    covering: HashMap<String, Arc<str>>,
}

impl Journal {
    /// Applies a job record (`None`: a tombstone).
    pub(crate) fn apply(&mut self, batch_id: &str, entry: Option<JobEntry>) {
        let id: Arc<str> = Arc::from(batch_id);
        if let Some(JobEntry::Open { ids, .. }) = self.jobs.get(&id) {
            for x in ids {
                if self.covering.get(x) == Some(&id) {
                    self.covering.remove(x);
                }
            }
        }
        match entry {
            Some(e) => {
                if let JobEntry::Open { ids, .. } = &e {
                    for x in ids {
                        self.covering.insert(x.clone(), id.clone());
                    }
                }
                self.jobs.insert(id, e);
            }
            None => {
                self.jobs.remove(&id);
            }
        }
    }

    /// Whether the journal knows `batch_id` (open or done).
    pub(crate) fn knows(&self, batch_id: &str) -> bool {
        self.jobs.contains_key(batch_id)
    }

    /// What the journal knows of `batch_id`.
    pub(crate) fn lookup(&self, batch_id: &str) -> Journaled {
        match self.jobs.get_key_value(batch_id) {
            None => Journaled::Unknown,
            Some((_, JobEntry::Done { .. })) => Journaled::Done,
            Some((id, JobEntry::Open { .. })) => self.open_job(id).map_or(Journaled::Unknown, Journaled::Open),
        }
    }

    /// The open job covering `id`, if any.
    pub(crate) fn covering(&self, id: &str) -> Option<OpenJob> {
        let batch_id = self.covering.get(id)?;
        self.open_job(batch_id)
    }

    fn open_job(&self, batch_id: &Arc<str>) -> Option<OpenJob> {
        let entry = self.jobs.get(batch_id)?;
        let JobEntry::Open { ids, at_ms, .. } = entry else {
            return None;
        };
        Some(OpenJob {
            batch_id: batch_id.clone(),
            spec: JobSpec {
                kind: entry.kind().unwrap_or(IdentifierType::BusinessEmail),
                ids: ids.clone(),
            },
            at_ms: *at_ms,
        })
    }

    /// Every open job.
    pub(crate) fn open_jobs(&self) -> Vec<OpenJob> {
        let mut out: Vec<OpenJob> = self.jobs.keys().filter_map(|id| self.open_job(id)).collect();
        out.sort_by_key(|j| j.at_ms);
        out
    }

    /// Forgets done jobs older than `before_ms` (past the reconciliation
    /// window; the disk keeps them until they expire).
    pub(crate) fn prune_done(&mut self, before_ms: i64) {
        self.jobs
            .retain(|_, e| !matches!(e, JobEntry::Done { at_ms } if *at_ms < before_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ids: &[&str], at_ms: i64) -> Option<JobEntry> {
        Some(JobEntry::Open {
            identifier_type: "business_email".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            at_ms,
        })
    }

    #[test]
    fn open_jobs_cover_their_identifiers_until_done() {
        let mut j = Journal::default();
        j.apply("b1", open(&["a@x.co", "b@x.co"], 10));
        j.apply("b2", open(&["c@x.co"], 5));
        assert_eq!(j.covering("a@x.co").unwrap().batch_id.as_ref(), "b1");
        assert_eq!(j.covering("a@x.co").unwrap().spec.ids, ["a@x.co", "b@x.co"]);
        let open_ids: Vec<_> = j.open_jobs().into_iter().map(|o| o.batch_id.to_string()).collect();
        assert_eq!(open_ids, ["b2", "b1"], "oldest first");
        j.apply("b1", Some(JobEntry::Done { at_ms: 20 }));
        assert!(j.covering("a@x.co").is_none());
        assert!(j.knows("b1"));
        assert_eq!(j.open_jobs().len(), 1);
        j.prune_done(15);
        assert!(j.knows("b1"), "done after the cut");
        j.prune_done(25);
        assert!(!j.knows("b1"));
        assert!(j.knows("b2"), "open jobs are never pruned");
        j.apply("b2", None);
        assert!(!j.knows("b2"));
        assert!(j.covering("c@x.co").is_none());
    }

    #[test]
    fn a_newer_job_takes_over_an_identifier() {
        let mut j = Journal::default();
        j.apply("b1", open(&["a@x.co"], 1));
        j.apply("b2", open(&["a@x.co"], 2));
        j.apply("b1", Some(JobEntry::Done { at_ms: 3 }));
        assert_eq!(j.covering("a@x.co").unwrap().batch_id.as_ref(), "b2");
    }
}

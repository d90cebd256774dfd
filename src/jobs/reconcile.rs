//! Reconciliation with the API's own list of this key's jobs (`GET /batch`,
//! newest first). A job id can be lost in two ways: a crash between the
//! API's answer and the journal's acknowledgement (a few milliseconds), or
//! an answer that never arrived (a timeout, a 502/504 after the API
//! accepted the submit). The API still has the job, and bills it: so at
//! start-up every job it lists within the window that the journal does not
//! know is adopted, and after a lost answer the job the API created for
//! that submit is found and used instead of submitting again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::JobContext;
use crate::api::{Endpoint, JobState, JobStatus};
use crate::model::JobSpec;

/// A job to adopt: its id and, when the journal knows them, its identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Adoption {
    /// The API's id.
    pub(crate) batch_id: Arc<str>,
    /// What it covers (`None`: only its result file will tell).
    pub(crate) spec: Option<JobSpec>,
}

/// Jobs per page of the list.
const PAGE: u32 = 100;
/// Pages read at most.
const MAX_PAGES: usize = 50;
/// Clock difference tolerated between this host and the API.
const SKEW: Duration = Duration::from_secs(60);

/// The jobs of `page` created at or after `since` (or of unknown age), and
/// whether the list may hold more of them further on.
pub(crate) fn recent(page: Vec<JobStatus>, since: DateTime<Utc>) -> (Vec<JobStatus>, bool) {
    let older = page.iter().any(|j| j.created_at.is_some_and(|t| t < since));
    let recent = page
        .into_iter()
        .filter(|j| j.created_at.is_none_or(|t| t >= since))
        .collect();
    (recent, !older)
}

/// Among `listed`, the job that a lost submit of `size` identifiers sent
/// at `sent_at` created, if exactly one fits (the newest of several).
pub(crate) fn lost_submit(
    listed: &[JobStatus],
    size: usize,
    sent_at: DateTime<Utc>,
    known: impl Fn(&str) -> bool,
) -> Option<Arc<str>> {
    let earliest = sent_at - chrono::Duration::from_std(SKEW).expect("small");
    listed
        .iter()
        .filter(|j| j.state != JobState::Failed)
        .filter(|j| j.identifier_count.is_none_or(|n| n as usize == size))
        .filter(|j| j.created_at.is_none_or(|t| t >= earliest))
        .filter_map(|j| j.batch_id.as_deref())
        .find(|id| !known(id))
        .map(Arc::from)
}

impl JobContext {
    /// This key's jobs the API lists as created since `since`, newest first.
    async fn list_since(&self, seq: u64, since: DateTime<Utc>) -> Vec<JobStatus> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = match self
                .call(Endpoint::List, seq, || self.api.list(PAGE, cursor.as_deref()))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot list this key's jobs; reconciliation incomplete");
                    break;
                }
            };
            let (jobs, more) = recent(page.jobs, since);
            out.extend(jobs);
            match page.next_cursor {
                Some(c) if more => cursor = Some(c),
                _ => break,
            }
        }
        out
    }

    fn known(&self, batch_id: &str) -> bool {
        self.store.knows_job(batch_id) || self.claimed.lock().expect("claimed").contains(batch_id)
    }

    /// At start-up: the journal's open jobs (their identifiers known), and
    /// the jobs the API lists as created within `api.job_timeout` that
    /// nobody tracks (failed ones excepted: they are not billed).
    pub(super) async fn reconcile_jobs(&self, seq: u64) -> Vec<Adoption> {
        let mut adopt: Vec<Adoption> = self
            .store
            .open_jobs()
            .into_iter()
            .map(|o| Adoption {
                batch_id: o.batch_id,
                spec: Some(o.spec),
            })
            .collect();
        let window = chrono::Duration::from_std(self.cfg.job_timeout + SKEW).unwrap_or(chrono::Duration::MAX);
        let since = Utc::now() - window;
        let listed = self.list_since(seq, since).await;
        let mut unknown = 0;
        for j in listed {
            let Some(id) = j.batch_id.as_deref() else { continue };
            if j.state == JobState::Failed || self.known(id) || adopt.iter().any(|a| &*a.batch_id == id) {
                continue;
            }
            unknown += 1;
            adopt.push(Adoption {
                batch_id: Arc::from(id),
                spec: None,
            });
        }
        self.store.prune_journal(self.cfg.job_timeout + SKEW);
        info!(
            open_in_journal = adopt.len() - unknown,
            unknown_to_the_journal = unknown,
            "reconciled with the API's job list"
        );
        adopt
    }

    /// After a submit whose answer was lost: the job it created, if the API
    /// lists one that fits and nobody tracks.
    pub(super) async fn find_lost_submit(&self, seq: u64, spec: &JobSpec, sent_at: DateTime<Utc>) -> Option<Arc<str>> {
        let page = self.call(Endpoint::List, seq, || self.api.list(20, None)).await.ok()?;
        let found = lost_submit(&page.jobs, spec.ids.len(), sent_at, |id| self.known(id))?;
        info!(batch_id = %found, "the API accepted a submit whose answer was lost; using that job");
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn job(id: &str, secs: i64, count: u64, state: JobState) -> JobStatus {
        JobStatus {
            batch_id: Some(id.into()),
            state,
            unknown_word: false,
            identifier_count: Some(count),
            result_count: None,
            download_urls: Vec::new(),
            download_url: None,
            error_message: None,
            created_at: Utc.timestamp_opt(secs, 0).single(),
            server_duration: None,
        }
    }

    #[test]
    fn only_recent_jobs_are_listed_and_paging_stops_at_the_first_old_one() {
        let page = vec![
            job("c", 300, 1, JobState::Running),
            job("b", 200, 1, JobState::Completed),
            job("a", 100, 1, JobState::Completed),
        ];
        let (jobs, more) = recent(page, Utc.timestamp_opt(150, 0).unwrap());
        assert_eq!(jobs.len(), 2);
        assert!(!more);
        let (jobs, more) = recent(
            vec![job("d", 400, 1, JobState::Running)],
            Utc.timestamp_opt(150, 0).unwrap(),
        );
        assert_eq!(jobs.len(), 1);
        assert!(more);
    }

    #[test]
    fn a_lost_submit_is_the_newest_unknown_job_of_its_size_and_time() {
        let sent = Utc.timestamp_opt(1000, 0).unwrap();
        let listed = vec![
            job("mine-known", 1001, 300, JobState::Running),
            job("other-size", 1001, 12, JobState::Running),
            job("failed", 1001, 300, JobState::Failed),
            job("mine", 1000, 300, JobState::Running),
            job("too-old", 900, 300, JobState::Completed),
        ];
        let known = |id: &str| id == "mine-known";
        assert_eq!(lost_submit(&listed, 300, sent, known).as_deref(), Some("mine"));
        assert_eq!(
            lost_submit(&listed[4..], 300, sent, known),
            None,
            "older than the submit"
        );
        assert_eq!(lost_submit(&listed, 7, sent, known), None);
    }
}

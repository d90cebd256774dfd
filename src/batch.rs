//! Batch: groups unique identifiers into jobs, one identifier type per job.
//! A batch is full at `batch.max_size`; a partial batch may go once
//! `batch.linger` has passed since its first identifier. Full batches queue
//! for a job slot while the open batch keeps filling, so the moment a slot
//! frees the next batch is ready.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{IdentifierType, JobSpec, API_MAX_BATCH};

/// True when a partial batch started at `started` may be submitted.
pub(crate) fn linger_expired(started: Instant, now: Instant, linger: Duration) -> bool {
    now.saturating_duration_since(started) >= linger
}

#[derive(Debug, Default)]
struct Open {
    ids: Vec<String>,
    started: Option<Instant>,
}

/// Open batches per identifier type plus the queue of full ones.
#[derive(Debug)]
pub(crate) struct Batcher {
    max_size: usize,
    linger: Duration,
    open: [Open; 2],
    ready: VecDeque<JobSpec>,
}

impl Batcher {
    /// A batcher flushing at `max_size` (at most 300) or after `linger`.
    pub(crate) fn new(max_size: usize, linger: Duration) -> Self {
        Self {
            max_size: max_size.clamp(1, API_MAX_BATCH),
            linger,
            open: Default::default(),
            ready: VecDeque::new(),
        }
    }

    /// Adds an identifier not already pending anywhere.
    pub(crate) fn push(&mut self, kind: IdentifierType, id: String, now: Instant) {
        let open = &mut self.open[kind.index()];
        if open.ids.is_empty() {
            open.started = Some(now);
        }
        open.ids.push(id);
        if open.ids.len() >= self.max_size {
            let ids = std::mem::take(&mut open.ids);
            open.started = None;
            self.ready.push_back(JobSpec { kind, ids });
        }
    }

    /// Queues a batch ahead of everything else (a split or a retry).
    pub(crate) fn push_ready_front(&mut self, spec: JobSpec) {
        self.ready.push_front(spec);
    }

    /// The next batch to submit now, if any: a full one first, else the
    /// open batch whose linger has expired (oldest first).
    pub(crate) fn next_job(&mut self, now: Instant) -> Option<JobSpec> {
        if let Some(spec) = self.ready.pop_front() {
            return Some(spec);
        }
        let kind = IdentifierType::ALL
            .into_iter()
            .filter_map(|k| {
                let o = &self.open[k.index()];
                o.started
                    .filter(|s| linger_expired(*s, now, self.linger))
                    .map(|s| (s, k))
            })
            .min()?
            .1;
        self.take_open(kind)
    }

    fn take_open(&mut self, kind: IdentifierType) -> Option<JobSpec> {
        let open = &mut self.open[kind.index()];
        open.started = None;
        let ids = std::mem::take(&mut open.ids);
        (!ids.is_empty()).then_some(JobSpec { kind, ids })
    }

    /// Keeps only the identifiers for which `keep` is true (others were
    /// answered another way, e.g. by a recovered job); empty batches vanish.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(IdentifierType, &str) -> bool) {
        self.ready.retain_mut(|spec| {
            spec.ids.retain(|id| keep(spec.kind, id));
            !spec.ids.is_empty()
        });
        for kind in IdentifierType::ALL {
            let open = &mut self.open[kind.index()];
            open.ids.retain(|id| keep(kind, id));
            if open.ids.is_empty() {
                open.started = None;
            }
        }
    }

    /// Whether a batch waits (full, or open).
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty() || self.open.iter().any(|o| !o.ids.is_empty())
    }

    /// Batches waiting: full ones and open ones.
    pub(crate) fn batches(&self) -> usize {
        self.ready.len() + self.open.iter().filter(|o| !o.ids.is_empty()).count()
    }

    /// When the oldest open batch's linger expires (for the dispatcher's timer).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .filter_map(|o| o.started)
            .min()
            .map(|s| s + self.linger)
    }

    /// Identifiers waiting (full and open batches).
    #[cfg(test)]
    pub(crate) fn queued_ids(&self) -> usize {
        self.ready.iter().map(|s| s.ids.len()).sum::<usize>() + self.open.iter().map(|o| o.ids.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentifierType::*;

    fn ids(n: usize, p: &str) -> Vec<String> {
        (0..n).map(|i| format!("{p}{i}@x.co")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn full_batch_is_ready_at_once() {
        let mut b = Batcher::new(3, Duration::from_secs(2));
        let now = Instant::now();
        for id in ids(4, "a") {
            b.push(BusinessEmail, id, now);
        }
        let job = b.next_job(now).unwrap();
        assert_eq!(job.ids.len(), 3);
        assert!(b.next_job(now).is_none(), "the partial one waits for linger");
        assert_eq!(b.queued_ids(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_batch_goes_after_linger_from_first_record() {
        let mut b = Batcher::new(300, Duration::from_secs(2));
        let t0 = Instant::now();
        b.push(BusinessEmail, "a@x.co".into(), t0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        b.push(BusinessEmail, "b@x.co".into(), Instant::now());
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(b.next_job(Instant::now()).is_none());
        tokio::time::advance(Duration::from_millis(500)).await;
        let job = b.next_job(Instant::now()).unwrap();
        assert_eq!(job.ids, vec!["a@x.co", "b@x.co"]);
        assert_eq!(b.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn one_type_per_job_and_oldest_first() {
        let mut b = Batcher::new(300, Duration::from_secs(1));
        let t0 = Instant::now();
        b.push(ProfileUrl, "https://x.co/in/a".into(), t0);
        tokio::time::advance(Duration::from_millis(10)).await;
        b.push(BusinessEmail, "a@x.co".into(), Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        let first = b.next_job(Instant::now()).unwrap();
        assert_eq!(first.kind, ProfileUrl);
        let second = b.next_job(Instant::now()).unwrap();
        assert_eq!(second.kind, BusinessEmail);
        assert!(b.next_job(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn requeued_batches_go_first() {
        let mut b = Batcher::new(2, Duration::from_secs(1));
        let now = Instant::now();
        for id in ids(2, "a") {
            b.push(BusinessEmail, id, now);
        }
        b.push_ready_front(JobSpec {
            kind: BusinessEmail,
            ids: vec!["retry@x.co".into()],
        });
        assert_eq!(b.next_job(now).unwrap().ids, vec!["retry@x.co"]);
        assert_eq!(b.next_job(now).unwrap().ids.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retain_drops_answered_identifiers() {
        let mut b = Batcher::new(2, Duration::from_secs(1));
        let now = Instant::now();
        for id in ids(3, "a") {
            b.push(BusinessEmail, id, now);
        }
        b.retain(|_, id| id != "a0@x.co" && id != "a2@x.co");
        assert_eq!(b.queued_ids(), 1);
        assert_eq!(b.next_deadline(), None, "the emptied open batch has no deadline");
        assert_eq!(b.next_job(now).unwrap().ids, vec!["a1@x.co"]);
    }

    #[test]
    fn max_size_is_capped_at_the_api_limit() {
        let b = Batcher::new(10_000, Duration::from_secs(1));
        assert_eq!(b.max_size, API_MAX_BATCH);
    }
}

//! The store's side of the credit budget ([`crate::budget`]): writing a
//! reservation and waiting for the verdict the log gives it, settling it,
//! and removing reservations whose windows have ended.

use std::time::Duration;

use tracing::{debug, warn};

use super::{now_ms, record, KafkaStore, Written};
use crate::budget::{reservation_id, Budget, Entry};

/// How often a submission waiting for room looks again (besides every
/// settlement and removal).
const RECHECK: Duration = Duration::from_secs(1);
/// How long after its windows end a reservation is removed (a pod whose
/// clock lags still counts it in the meantime).
const KEEP_AFTER_END: Duration = Duration::from_secs(300);
/// First and longest pause after a reservation Kafka did not acknowledge.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// What reserving came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// A valid reservation of now's windows (or no ceilings): the
    /// submission may leave.
    Held,
    /// No room, and the caller may give the job up (nothing of it was
    /// written yet): submitting is halted on the budget.
    NoRoom,
}

/// A submission waiting for room; it stops waiting when dropped (also
/// when its task is aborted).
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting(false);
    }
}

impl KafkaStore {
    /// The credit budget.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Reserves `n` credits for submission `attempt` of job `job`: a
    /// valid reservation that counts in the windows of now, reused if one
    /// is held (a submission proven never created, going again), else
    /// written to the store topic (each write under its own key) and judged
    /// by the log. Without room: halts submitting, then returns
    /// [`Reserved::NoRoom`] if `may_give_up`, else waits for room and
    /// tries again.
    pub(crate) async fn reserve(&self, job: &str, attempt: u32, n: u64, may_give_up: bool) -> Reserved {
        let b = &*self.budget;
        let taken = reservation_id(job, attempt);
        if !b.enabled() {
            b.untake(&taken);
            return Reserved::Held;
        }
        let prefix = format!("{taken}/");
        let mut tries: Vec<String> = Vec::new();
        let mut pause = FIRST_PAUSE;
        loop {
            let now = now_ms();
            let slots = b.slots(now);
            if let Some(id) = b.held_now(&prefix, &slots) {
                b.untake(&taken);
                // Tries written before whose acknowledgement was lost, but
                // that the log took: nothing is submitted under them.
                for extra in b
                    .unsettled(&prefix)
                    .into_iter()
                    .filter(|x| *x != id && tries.contains(x))
                {
                    self.settle_one(&extra, 0).await;
                }
                debug!(reservation = %id, credits = n, "budget reserved");
                return Reserved::Held;
            }
            let id = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
            let entry = Entry::new(self.me(), n, slots, now);
            tries.push(id.clone());
            let key = record::reservation_key(&id);
            let written = match self.j.writer.send_acked(&key, Some(&entry.encode())).await {
                Ok(w) => w,
                Err(e) => {
                    self.j.metrics.store_write_failed_by(1);
                    warn!(error = %e, "the store topic refuses a budget reservation; nothing is submitted until it takes one");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
            };
            self.applied(written).await;
            b.untake(&taken);
            if b.holds(&id) {
                // Valid: the next round returns it, if its windows are
                // still now's (else it stays counted where it is and
                // another is written).
                continue;
            }
            let Some(room) = b.room(now_ms()) else {
                continue;
            };
            b.halt(room);
            if may_give_up {
                return Reserved::NoRoom;
            }
            b.waiting(true);
            let _waiting = Waiting(b);
            loop {
                let changed = b.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if b.room(now_ms()).is_none_or(|r| r.credits >= n) {
                    break;
                }
                let _ = tokio::time::timeout(RECHECK, changed).await;
            }
        }
    }

    /// Submission `attempt` of job `job` cost `credits` (its matches; 0
    /// when the API refused it): its latest valid reservation is settled
    /// at that, any other unsettled one at 0 (nothing else of that
    /// submission was created).
    pub(crate) async fn settle(&self, job: &str, attempt: u32, credits: u64) {
        if !self.budget.enabled() {
            return;
        }
        let prefix = format!("{}/", reservation_id(job, attempt));
        for (i, id) in self.budget.unsettled(&prefix).into_iter().enumerate() {
            self.settle_one(&id, if i == 0 { credits } else { 0 }).await;
        }
    }

    async fn settle_one(&self, id: &str, credits: u64) {
        let value = crate::budget::Settlement::encode(credits);
        self.j
            .writer
            .write(
                &record::settlement_key(id),
                Some(&value),
                &self.j.metrics,
                "budget settlement",
            )
            .await;
    }

    /// Waits until the tail applied the store topic past `written`.
    async fn applied(&self, written: Written) {
        let mut changes = self.journal_changes.clone();
        loop {
            if self
                .j
                .journal
                .lock()
                .expect("journal")
                .applied_past(written.0, written.1)
            {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Tombstones the reservations (and settlements) whose windows ended.
    pub(super) fn remove_ended_reservations(&self) {
        let before = now_ms() - KEEP_AFTER_END.as_millis() as i64;
        for id in self.budget.ended(before) {
            let _ = self.j.writer.send_now(&record::reservation_key(&id), None);
            let _ = self.j.writer.send_now(&record::settlement_key(&id), None);
        }
    }
}

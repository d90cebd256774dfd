//! The store's side of the credit budget ([`crate::budget`]): writing a
//! reservation and waiting for the verdict the log gives it, settling it,
//! and removing reservations whose windows have ended.

use std::time::Duration;

use tracing::debug;

use super::{now_ms, record, KafkaStore, Written};
use crate::budget::{Budget, Entry};

/// How often a submission waiting for room looks again (besides every
/// settlement and removal).
const RECHECK: Duration = Duration::from_secs(1);
/// How long after its windows end a reservation is removed (a pod whose
/// clock lags still counts it in the meantime).
const KEEP_AFTER_END: Duration = Duration::from_secs(300);

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

    /// Waits until reservation `id` of `n` credits is valid: writes it to
    /// the store topic and reads the log's verdict; while it does not fit,
    /// submitting is halted and it is written again once room may be
    /// there. Returns at once without ceilings, or when `id` already
    /// holds (a submission proven never created, going again).
    pub(crate) async fn reserve(&self, id: &str, n: u64) {
        let b = &*self.budget;
        if !b.enabled() || b.holds(id) {
            b.untake(id);
            return;
        }
        loop {
            let entry = Entry::new(self.me(), n, b.slots(now_ms()));
            let written = self
                .j
                .writer
                .write(
                    &record::reservation_key(id),
                    Some(&entry.encode()),
                    &self.j.metrics,
                    "budget reservation",
                )
                .await;
            self.applied(written).await;
            if b.holds(id) {
                debug!(reservation = id, credits = n, "budget reserved");
                return;
            }
            b.waiting(true);
            let _waiting = Waiting(b);
            loop {
                let room = b.room(now_ms()).expect("a ceiling");
                if room.credits >= n {
                    break;
                }
                b.halt(room);
                let changed = b.changed.notified();
                let _ = tokio::time::timeout(RECHECK, changed).await;
            }
        }
    }

    /// Reservation `id`'s job cost `credits` (its matches; 0 when the API
    /// refused it).
    pub(crate) async fn settle(&self, id: &str, credits: u64) {
        if !self.budget.enabled() {
            return;
        }
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

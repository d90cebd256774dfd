//! Budget: ceilings on the credits the key's jobs may cost per hour and
//! per day, shared by every pod of the deployment through the store topic
//! and never exceeded, counting conservatively.
//!
//! Before a submission of `n` identifiers leaves, its pod writes a
//! reservation of `n` credits (`b/<job>/<attempt>`) to partition 0 of the
//! store topic and waits until its own tail has read it back: it is valid
//! only if every earlier valid reservation of its windows plus `n` fits
//! the ceiling ([`ledger`]), a verdict every pod reaches alike because
//! every pod reads that one partition in the same order. Only a valid
//! reservation lets the request leave; a pod that cannot write to or read
//! from Kafka submits nothing. When the job's results are in, a
//! settlement (`c/<job>/<attempt>`) replaces `n` by its matches (1 credit
//! each). Records live until their windows end, then are tombstoned.
//!
//! The dispatcher asks [`Budget::take`] before it starts a job: a batch
//! larger than the room left is cut to fit it, and with no room at all
//! submitting halts (`/readyz` 503 `budget: ...`, one log line with the
//! time the window reopens, `identify_budget_halted`) until a settlement
//! gives credits back or the window rolls. Cache hits and repeats are
//! still published meanwhile; offsets advance only over resolved records.

mod forecast;
mod ledger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::{info, warn};

pub(crate) use forecast::Forecast;
pub(crate) use ledger::{Entry, Ledger, Room, Settlement, Slot, Span};

use crate::config::BudgetConfig;
use crate::health::Health;
use crate::metrics::Metrics;

/// How often the forecast is logged.
pub(crate) const FORECAST_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// What the dispatcher may submit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The whole batch (or there are no ceilings).
    All,
    /// Only this many of its identifiers.
    Part(usize),
    /// Nothing until room comes back.
    Nothing(Room),
}

/// The key's budget as this pod sees it.
pub(crate) struct Budget {
    /// (span, ceiling, window length in ms) of each ceiling set.
    ceilings: Vec<(Span, u64, i64)>,
    ledger: Mutex<Ledger>,
    /// Credits the dispatcher took for jobs whose reservation this pod has
    /// not read back yet, by reservation id.
    taken: Mutex<HashMap<String, u64>>,
    /// Room may have grown (a settlement, a removal).
    pub(crate) changed: Notify,
    halted: Mutex<Option<Room>>,
    /// Submissions waiting for room.
    waiting: AtomicUsize,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// The id of job `job`'s submission `attempt` in the budget: what the
/// dispatcher takes under, and the prefix of that submission's
/// reservations (`<job>/<attempt>/<try>`: every write has its own key, so
/// a write retried after a lost acknowledgement is never a second copy of
/// the same key, which compaction would move to a later offset).
pub(crate) fn reservation_id(job: &str, attempt: u32) -> String {
    format!("{job}/{attempt}")
}

impl Budget {
    /// The budget `cfg` sets (none: every submission may go).
    pub(crate) fn new(cfg: &BudgetConfig, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        let mut ceilings = Vec::new();
        if let Some(c) = cfg.credits_per_hour {
            ceilings.push((Span::Hour, c, cfg.hour_length.as_millis() as i64));
        }
        if let Some(c) = cfg.credits_per_day {
            ceilings.push((Span::Day, c, cfg.day_length.as_millis() as i64));
        }
        Self {
            ceilings,
            ledger: Mutex::new(Ledger::default()),
            taken: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            halted: Mutex::new(None),
            waiting: AtomicUsize::new(0),
            health,
            metrics,
        }
    }

    /// Whether any ceiling is set.
    pub(crate) fn enabled(&self) -> bool {
        !self.ceilings.is_empty()
    }

    /// The windows of the moment `now_ms`, with their ceilings.
    pub(crate) fn slots(&self, now_ms: i64) -> Vec<Slot> {
        self.ceilings
            .iter()
            .map(|&(span, limit, len)| {
                let start_ms = now_ms.div_euclid(len) * len;
                Slot {
                    span,
                    start_ms,
                    end_ms: start_ms + len,
                    limit,
                }
            })
            .collect()
    }

    /// The room left at `now_ms`, less what the dispatcher took and has not
    /// seen reserved yet; `None` without ceilings.
    pub(crate) fn room(&self, now_ms: i64) -> Option<Room> {
        let mut room = self.ledger.lock().expect("ledger").room(&self.slots(now_ms))?;
        let taken: u64 = self.taken.lock().expect("budget").values().sum();
        room.credits = room.credits.saturating_sub(taken);
        Some(room)
    }

    /// The dispatcher would start a job of `n` identifiers under
    /// reservation `id`: how many of them may go. What it takes counts
    /// against the room until the reservation is read back.
    pub(crate) fn take(&self, id: &str, n: usize, now_ms: i64) -> Take {
        let Some(room) = self.room(now_ms) else {
            return Take::All;
        };
        if room.credits == 0 {
            return Take::Nothing(room);
        }
        let k = (n as u64).min(room.credits);
        self.taken.lock().expect("budget").insert(id.to_string(), k);
        if k as usize == n {
            Take::All
        } else {
            Take::Part(k as usize)
        }
    }

    /// Whether reservation `id` is valid.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.ledger.lock().expect("ledger").holds(id)
    }

    /// The latest valid, unsettled try of submission `prefix` that counts
    /// in exactly the windows `slots` (the windows of now).
    pub(crate) fn held_now(&self, prefix: &str, slots: &[Slot]) -> Option<String> {
        self.ledger
            .lock()
            .expect("ledger")
            .unsettled(prefix)
            .into_iter()
            .find(|(_, e)| e.slots == slots)
            .map(|(id, _)| id)
    }

    /// The valid, unsettled tries of submission `prefix`, latest first.
    pub(crate) fn unsettled(&self, prefix: &str) -> Vec<String> {
        self.ledger
            .lock()
            .expect("ledger")
            .unsettled(prefix)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Applies reservation `id` read from the topic (`None`: a tombstone);
    /// returns what to store (`Some(None)`: remove it), if anything.
    pub(crate) fn apply_reservation(&self, id: &str, value: Option<&[u8]>) -> Option<Option<Vec<u8>>> {
        let mut ledger = self.ledger.lock().expect("ledger");
        let stored = match value {
            None => ledger.remove(id).then_some(None),
            Some(v) => {
                let entry = Entry::decode(v)?;
                ledger.reserve(id, entry).map(|e| Some(e.encode()))
            }
        };
        drop(ledger);
        if matches!(stored, Some(None)) {
            self.changed.notify_waiters();
        }
        stored
    }

    /// Applies a settlement of reservation `id`; returns the entry to store.
    pub(crate) fn apply_settlement(&self, id: &str, value: &[u8]) -> Option<Vec<u8>> {
        let credits = Settlement::decode(value)?;
        let settled = self.ledger.lock().expect("ledger").settle(id, credits)?;
        self.changed.notify_waiters();
        Some(settled.encode())
    }

    /// Loads a stored entry at start-up.
    pub(crate) fn load(&self, id: &str, value: &[u8]) {
        if let Some(e) = Entry::decode(value) {
            self.ledger.lock().expect("ledger").load(id, e);
        }
    }

    /// The dispatcher took credits for reservation `id` that will not be
    /// written (the job never came to submit).
    pub(crate) fn untake(&self, id: &str) {
        if self.taken.lock().expect("budget").remove(id).is_some() {
            self.changed.notify_waiters();
        }
    }

    /// Reservations whose windows all ended before `before_ms`.
    pub(crate) fn ended(&self, before_ms: i64) -> Vec<String> {
        self.ledger.lock().expect("ledger").ended(before_ms)
    }

    /// Submitting halts until `room` reopens: logged once, `/readyz` 503,
    /// the metric set.
    pub(crate) fn halt(&self, room: Room) {
        let mut halted = self.halted.lock().expect("budget");
        let first = halted.is_none();
        *halted = Some(room);
        drop(halted);
        let reopens = chrono::DateTime::from_timestamp_millis(room.reopens_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        self.health.set_budget(Some(format!(
            "the {} credit budget is spent until {reopens} (or until jobs in flight cost less than reserved)",
            room.tightest.as_str()
        )));
        self.metrics.set_budget_halted(true);
        if first {
            warn!(window = room.tightest.as_str(), reopens = %reopens, "the credit budget is spent: no new jobs until the window reopens; cache hits and repeats are still published");
        }
    }

    /// A submission starts (`true`) or stops waiting for room.
    pub(crate) fn waiting(&self, starts: bool) {
        if starts {
            self.waiting.fetch_add(1, Ordering::Relaxed);
        } else {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// While halted: whether submitting may resume at `now_ms` (no
    /// submission waits for room, and there is some).
    pub(crate) fn may_resume(&self, now_ms: i64) -> bool {
        self.waiting.load(Ordering::Relaxed) == 0 && self.room(now_ms).is_none_or(|r| r.credits > 0)
    }

    /// Room came back: submitting resumes.
    pub(crate) fn resume(&self) {
        if self.halted.lock().expect("budget").take().is_some() {
            self.health.set_budget(None);
            self.metrics.set_budget_halted(false);
            info!("the credit budget has room again; resuming");
        }
    }

    /// Whether submitting is halted by the budget, and until when at most.
    pub(crate) fn halted(&self) -> Option<Room> {
        *self.halted.lock().expect("budget")
    }

    /// Sets the remaining-credits metric for `now_ms`.
    pub(crate) fn report(&self, now_ms: i64) {
        let ledger = self.ledger.lock().expect("ledger");
        for s in self.slots(now_ms) {
            let spent = ledger.spent(s.span, s.start_ms);
            self.metrics
                .set_budget_remaining(s.span.as_str(), s.limit.saturating_sub(spent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(hour: Option<u64>, day: Option<u64>) -> Budget {
        let cfg = BudgetConfig {
            credits_per_hour: hour,
            credits_per_day: day,
            ..BudgetConfig::default()
        };
        Budget::new(&cfg, Arc::new(Health::default()), Arc::new(Metrics::new()))
    }

    fn reserve(b: &Budget, id: &str, n: u64, now_ms: i64) -> bool {
        let e = Entry::new("me", n, b.slots(now_ms), now_ms);
        let valid = b.apply_reservation(&format!("{id}/x"), Some(&e.encode())).is_some();
        b.untake(id);
        valid
    }

    #[test]
    fn windows_are_aligned_to_their_length() {
        let b = budget(Some(10), Some(100));
        let t = 1_700_000_123_456;
        let s = b.slots(t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].start_ms % 3_600_000, 0);
        assert!(s[0].start_ms <= t && t < s[0].end_ms);
        assert_eq!(s[1].start_ms % 86_400_000, 0, "UTC midnight");
        assert_eq!(
            s[1].end_ms - s[1].start_ms,
            Duration::from_secs(86_400).as_millis() as i64
        );
    }

    #[test]
    fn without_ceilings_everything_goes() {
        let b = budget(None, None);
        assert!(!b.enabled());
        assert_eq!(b.take("j/1", 300, 0), Take::All);
        assert!(b.slots(0).is_empty());
    }

    #[test]
    fn the_dispatcher_takes_what_fits_and_what_it_took_counts_until_read_back() {
        let b = budget(Some(500), None);
        let t = 3_600_000 * 10 + 5;
        assert_eq!(b.take("a/1", 300, t), Take::All);
        assert_eq!(b.take("b/1", 300, t), Take::Part(200), "300 taken, 200 left");
        assert!(matches!(b.take("c/1", 300, t), Take::Nothing(r) if r.reopens_ms == 3_600_000 * 11));
        assert!(reserve(&b, "a/1", 300, t));
        assert!(reserve(&b, "b/1", 200, t));
        assert_eq!(b.room(t).unwrap().credits, 0);
        // The first job matched 120: 180 credits come back.
        assert_eq!(b.held_now("a/1/", &b.slots(t)), Some("a/1/x".to_string()));
        assert_eq!(
            b.held_now("a/1/", &b.slots(t + 3_600_000)),
            None,
            "another hour: reserve again"
        );
        let stored = b.apply_settlement("a/1/x", &Settlement::encode(120));
        assert_eq!(Entry::decode(&stored.unwrap()).unwrap().cost, Some(120));
        assert_eq!(b.room(t).unwrap().credits, 180);
        assert_eq!(b.room(t + 3_600_000).unwrap().credits, 500, "the next hour");
        // A job that never came to submit gives back what it took.
        assert_eq!(b.take("d/1", 300, t), Take::Part(180));
        b.untake("d/1");
        assert_eq!(b.room(t).unwrap().credits, 180);
    }

    #[test]
    fn a_tombstone_removes_and_is_stored_as_a_removal() {
        let b = budget(Some(500), None);
        assert!(reserve(&b, "a/1", 300, 0));
        assert_eq!(b.apply_reservation("a/1/x", None), Some(None));
        assert_eq!(b.apply_reservation("a/1/x", None), None);
        assert_eq!(b.room(0).unwrap().credits, 500);
    }

    #[test]
    fn halting_sets_readiness_and_resuming_clears_it() {
        let b = budget(Some(1), None);
        let room = b.room(0).unwrap();
        b.halt(room);
        assert!(b.health.unready().unwrap().starts_with("budget:"));
        assert!(b.halted().is_some());
        b.resume();
        assert!(b.halted().is_none());
        assert!(!b.health.unready().unwrap_or_default().starts_with("budget:"));
    }
}

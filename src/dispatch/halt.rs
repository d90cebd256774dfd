//! Systemic refusals: telling the API's refusal of one identifier from its
//! refusal of every request (an account or contract refusal, a
//! `webhook_url` it does not take, a wrong path or version). The first is
//! dead-lettered once isolated; the second halts submitting, visibly, and
//! is probed slowly until it clears. Pure decisions, unit-tested.
//!
//! - A refused batch of several identifiers is halved (the usual way to
//!   isolate a bad one). If a half is refused with the same message as its
//!   parent and the API accepted no submit in between, the refusal is not
//!   about an identifier: halt.
//! - A single identifier refused is dead-lettered only when the API accepted
//!   a submit since its batch was first refused (so the request is fine and
//!   the identifier is not). Otherwise: halt, and probe.
//! - A submit answered 404, 405 or 415 (a wrong `api.base_url`, a gateway in
//!   the way) halts at once.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// First wait before a probe while halted; it doubles up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait between two probes.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What to do with a refused batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Halve it and submit the halves.
    Split,
    /// Its one identifier is bad: dead-letter it.
    DeadLetter,
    /// The API refuses every request: stop submitting; keep the batch.
    Halt,
}

/// The first refusal of a batch's lineage (its ancestors before the splits).
#[derive(Debug, Clone)]
struct Suspect {
    message: String,
    at: Instant,
}

/// Submitting is halted.
#[derive(Debug, Clone)]
pub(super) struct Halted {
    /// When the next probe may go.
    pub(super) next_probe: Instant,
    backoff: Duration,
}

/// The refusals seen, and the halt they led to.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    suspects: HashMap<String, Suspect>,
    last_accept: Option<Instant>,
    halted: Option<Halted>,
}

impl Refusals {
    /// A submit of `ids` was refused with HTTP `status` and `message`.
    pub(super) fn refused(&mut self, ids: &[String], status: u16, message: &str, now: Instant) -> Verdict {
        if status != 400 {
            return self.halt(now);
        }
        let lineage = ids
            .iter()
            .filter_map(|id| self.suspects.get(id))
            .min_by_key(|s| s.at)
            .cloned();
        let since = lineage.as_ref().map_or(now, |s| s.at);
        let accepted_since = self.last_accept.is_some_and(|a| a > since);
        for id in ids {
            self.suspects.entry(id.clone()).or_insert_with(|| Suspect {
                message: message.to_string(),
                at: now,
            });
        }
        let same_again = lineage.is_some_and(|s| s.message == message);
        if same_again && !accepted_since {
            return self.halt(now);
        }
        if ids.len() > 1 {
            return Verdict::Split;
        }
        if accepted_since {
            Verdict::DeadLetter
        } else {
            self.halt(now)
        }
    }

    fn halt(&mut self, now: Instant) -> Verdict {
        let backoff = match &self.halted {
            Some(h) => (h.backoff * 2).min(MAX_BACKOFF),
            None => FIRST_BACKOFF,
        };
        self.halted = Some(Halted {
            next_probe: now + backoff,
            backoff,
        });
        Verdict::Halt
    }

    /// The API accepted a submit: whatever halted submitting has cleared.
    /// Returns whether a halt ended.
    pub(super) fn accepted(&mut self, now: Instant) -> bool {
        self.last_accept = Some(now);
        self.halted.take().is_some()
    }

    /// The identifier left (resolved or dead-lettered): no longer a suspect.
    pub(super) fn forget(&mut self, id: &str) {
        self.suspects.remove(id);
    }

    /// Whether `id` belongs to a refused lineage.
    pub(super) fn suspect(&self, id: &str) -> bool {
        self.suspects.contains_key(id)
    }

    /// The halt, if submitting is halted.
    pub(super) fn halted(&self) -> Option<&Halted> {
        self.halted.as_ref()
    }

    /// While halted: a probe is due at `now`; the next one waits for this
    /// one's outcome (or the backoff, whichever ends later).
    pub(super) fn probe_due(&mut self, now: Instant) -> bool {
        match &mut self.halted {
            Some(h) if now >= h.next_probe => {
                h.next_probe = now + h.backoff;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, p: &str) -> Vec<String> {
        (0..n).map(|i| format!("{p}{i}@x.co")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_identifier_is_isolated_and_dead_lettered() {
        let mut r = Refusals::default();
        let t = Instant::now();
        let all = ids(4, "a");
        assert_eq!(r.refused(&all, 400, "invalid identifier", t), Verdict::Split);
        r.accepted(t + Duration::from_secs(1)); // the good half
        assert_eq!(
            r.refused(&all[2..], 400, "invalid identifier", t + Duration::from_secs(2)),
            Verdict::Split,
            "the same message, but the API accepted a submit meanwhile"
        );
        assert_eq!(
            r.refused(&all[3..], 400, "invalid identifier", t + Duration::from_secs(3)),
            Verdict::DeadLetter
        );
        assert!(r.halted().is_none());
        r.forget(&all[3]);
        assert!(!r.suspect(&all[3]));
    }

    #[tokio::test(start_paused = true)]
    async fn both_halves_refused_alike_halt_and_an_acceptance_resumes() {
        let mut r = Refusals::default();
        let t = Instant::now();
        let all = ids(300, "a");
        assert_eq!(r.refused(&all, 400, "contract expired", t), Verdict::Split);
        assert_eq!(
            r.refused(&all[..150], 400, "contract expired", t + Duration::from_millis(5)),
            Verdict::Halt
        );
        let h = r.halted().unwrap();
        assert_eq!(h.next_probe, t + Duration::from_millis(5) + FIRST_BACKOFF);
        assert!(!r.probe_due(t + Duration::from_secs(1)));
        assert!(r.probe_due(t + FIRST_BACKOFF + Duration::from_secs(1)));
        assert!(
            !r.probe_due(t + FIRST_BACKOFF + Duration::from_secs(2)),
            "one probe at a time"
        );
        // The probe is refused again: the backoff doubles.
        let later = t + Duration::from_secs(30);
        assert_eq!(r.refused(&all[..150], 400, "contract expired", later), Verdict::Halt);
        assert_eq!(r.halted().unwrap().next_probe, later + FIRST_BACKOFF * 2);
        assert!(r.accepted(later + Duration::from_secs(60)));
        assert!(r.halted().is_none());
        assert!(!r.accepted(later + Duration::from_secs(61)), "no halt to end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_identifier_refused_without_evidence_halts_instead_of_dead_lettering() {
        let mut r = Refusals::default();
        let t = Instant::now();
        let one = ids(1, "lone");
        assert_eq!(r.refused(&one, 400, "refused", t), Verdict::Halt);
        // Another request goes through (a probe): the identifier itself is bad.
        r.accepted(t + Duration::from_secs(10));
        assert_eq!(
            r.refused(&one, 400, "refused", t + Duration::from_secs(11)),
            Verdict::DeadLetter
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_path_halts_at_once_and_the_backoff_is_capped() {
        let mut r = Refusals::default();
        let mut t = Instant::now();
        assert_eq!(r.refused(&ids(300, "a"), 404, "no such endpoint", t), Verdict::Halt);
        for _ in 0..10 {
            t += Duration::from_secs(600);
            r.refused(&ids(300, "a"), 404, "no such endpoint", t);
        }
        assert_eq!(r.halted().unwrap().next_probe, t + MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn different_messages_are_different_refusals() {
        let mut r = Refusals::default();
        let t = Instant::now();
        let all = ids(4, "a");
        assert_eq!(r.refused(&all, 400, "business_emails[3] is invalid", t), Verdict::Split);
        assert_eq!(
            r.refused(&all[2..], 400, "business_emails[1] is invalid", t),
            Verdict::Split
        );
    }
}

//! Job slots: how many of the key's active-job slots the pods of this
//! deployment may hold together (`api.max_active_jobs` at most; the team
//! splits them, see [`crate::share`]). The key may be shared with other
//! tools, whose jobs hold slots no member record shows, so the limit
//! learns how many jobs on the key are not the team's ("foreign") from the
//! API's answers, and leaves the rest to the team:
//!
//! - until the first answer, one job at a time: its answer tells what is
//!   free (a key whose other user holds slots costs no 429 at start-up);
//! - an accepted submit that says how many slots remain
//!   (`x-ratelimit-remaining`) says the key holds `max - remaining` jobs,
//!   so `max - remaining - team` are foreign ("team": the jobs of every pod
//!   of the team, by their member records); one that does not say tells
//!   nothing;
//! - a 429 says the key is full: `max - team` are foreign;
//! - the limit is `max` less the fewest foreign jobs any answer of the last
//!   [`WINDOW`] saw. A pod's view of its peers lags their jobs by up to a
//!   heartbeat, in either direction, so a single answer may be off by a
//!   job or two; the fewest of several is right once any of them was, and
//!   an answer older than the window is forgotten, so a limit learnt from
//!   a view that lagged never keeps a pod from its slots for long (it
//!   could not learn otherwise: a pod the limit holds back submits nothing
//!   to be answered). Other tools' jobs that stay cost at most one 429 a
//!   window without the headers, none with them while submits go on.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long an answer counts.
pub(super) const WINDOW: Duration = Duration::from_secs(10);

/// The learnt job-slot limit.
#[derive(Debug, Clone)]
pub(super) struct SlotLimit {
    max: usize,
    /// (when, foreign jobs) of the recent answers, oldest first.
    seen: VecDeque<(Instant, usize)>,
    /// No submit has been answered yet.
    unanswered: bool,
}

impl SlotLimit {
    /// One job until the first answer, then up to `max`.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            seen: VecDeque::new(),
            unanswered: true,
        }
    }

    /// The limit at `now`: `max` less the fewest foreign jobs of the
    /// answers of the last [`WINDOW`], at least one.
    pub(super) fn get(&self, now: Instant) -> usize {
        if self.unanswered {
            return 1;
        }
        let foreign = self
            .seen
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < WINDOW)
            .map(|(_, f)| *f)
            .min()
            .unwrap_or(0);
        self.max.saturating_sub(foreign).max(1)
    }

    /// A submit was accepted at `now` while the team held `team` jobs at
    /// the API (this one included), and the API said `remaining` slots
    /// are left.
    pub(super) fn on_accepted(&mut self, now: Instant, team: usize, remaining: Option<u32>) {
        self.unanswered = false;
        if let Some(r) = remaining {
            let on_key = self.max.saturating_sub(r as usize);
            self.observe(now, on_key.saturating_sub(team));
        }
    }

    /// A submit was refused with 429 at `now` while the team held `team`
    /// jobs: the key is full, the rest is foreign.
    pub(super) fn on_rate_limited(&mut self, now: Instant, team: usize) {
        self.unanswered = false;
        self.observe(now, self.max.saturating_sub(team));
    }

    /// When an answer of the window is forgotten (the limit may rise then).
    pub(super) fn next_change(&self, now: Instant) -> Option<Instant> {
        self.seen.iter().map(|(at, _)| *at + WINDOW).find(|t| *t > now)
    }

    fn observe(&mut self, now: Instant, foreign: usize) {
        while self
            .seen
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.seen.pop_front();
        }
        self.seen.push_back((now, foreign));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A key of 5 slots, `foreign` of them held by another tool for the
    /// whole run: how many 429s `jobs` jobs of this pod meet, and the
    /// limit at the end. Each round (a second) the pod fills its limit; a
    /// submit beyond the free slots gets 429; one job completes per round.
    fn run(foreign: usize, jobs: u32, headers: bool) -> (u32, usize) {
        let mut l = SlotLimit::new(5);
        let mut now = Instant::now();
        let free = 5 - foreign;
        let (mut held, mut done, mut refused) = (0usize, 0u32, 0u32);
        while done < jobs {
            while held < l.get(now) {
                if held < free {
                    held += 1;
                    l.on_accepted(now, held, headers.then(|| (free - held) as u32));
                } else {
                    refused += 1;
                    l.on_rate_limited(now, held);
                    break;
                }
            }
            held -= 1;
            done += 1;
            now += Duration::from_secs(1);
        }
        (refused, l.get(now))
    }

    #[test]
    fn the_limit_settles_on_the_free_slots_instead_of_cycling() {
        // The old rule halved the limit on each 429 and grew it back by
        // one per job: 1, 2, 3, 4, 429, 1, ... with two foreign jobs.
        let (refused, limit) = run(2, 100, true);
        assert_eq!((refused, limit), (0, 3), "the headers say what is free");
        let (refused, limit) = run(2, 100, false);
        assert!(refused <= 10, "{refused} 429s in 100 jobs");
        assert!(limit >= 3, "{limit}");
        let (refused, limit) = run(0, 100, false);
        assert_eq!((refused, limit), (0, 5), "a key of its own");
    }

    #[test]
    fn one_job_until_the_first_answer_says_what_is_free() {
        let now = Instant::now();
        let mut l = SlotLimit::new(5);
        assert_eq!(l.get(now), 1);
        l.on_accepted(now, 1, Some(2));
        assert_eq!(l.get(now), 3, "another user holds two");
        let mut silent = SlotLimit::new(5);
        silent.on_accepted(now, 1, None);
        assert_eq!(silent.get(now), 5, "an API that does not say: every slot");
        silent.on_rate_limited(now, 4);
        silent.on_accepted(now, 4, None);
        assert_eq!(silent.get(now), 4, "after that, only what was learnt");
    }

    #[test]
    fn a_view_of_the_peers_that_lagged_holds_a_pod_back_for_a_window_at_most() {
        let t0 = Instant::now();
        let mut l = SlotLimit::new(5);
        // Two peers' jobs not heard of yet: they look foreign.
        l.on_accepted(t0, 3, Some(0));
        assert_eq!(l.get(t0), 3);
        // A later answer with a fresh view: nothing foreign.
        l.on_accepted(t0 + Duration::from_secs(2), 5, Some(0));
        assert_eq!(l.get(t0 + Duration::from_secs(2)), 5, "the fewest foreign counts");
        // Only the lagging answer, and no submit since: forgotten.
        let mut stuck = SlotLimit::new(5);
        stuck.on_accepted(t0, 2, Some(0));
        assert_eq!(stuck.get(t0 + WINDOW - Duration::from_millis(1)), 2);
        assert_eq!(stuck.next_change(t0), Some(t0 + WINDOW), "the pod wakes then");
        assert_eq!(stuck.get(t0 + WINDOW), 5);
        assert_eq!(stuck.next_change(t0 + WINDOW), None);
    }

    #[test]
    fn a_429_leaves_the_team_what_it_holds_never_below_one() {
        let now = Instant::now();
        let mut l = SlotLimit::new(5);
        l.on_rate_limited(now, 3);
        assert_eq!(l.get(now), 3);
        l.on_rate_limited(now, 0);
        assert_eq!(l.get(now), 3, "the fewest foreign of the window");
        let mut full = SlotLimit::new(5);
        full.on_rate_limited(now, 0);
        assert_eq!(full.get(now), 1);
        l.on_accepted(now, 2, Some(9));
        assert_eq!(l.get(now), 5, "never above the maximum");
        assert_eq!(SlotLimit::new(0).get(now), 1);
    }
}

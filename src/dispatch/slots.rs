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
//!   [`WINDOW`] saw. A pod's view of its peers lags their jobs: pods that
//!   submit in the same moment do not see each other's submit in time, so
//!   each answer is judged again [`JUDGE_AFTER`] it came, against each
//!   peer's last member record written by the answer's moment (by then it
//!   has arrived); the fewest of several answers is right once any of them
//!   was, and an answer older than the window is forgotten, so a limit
//!   learnt from a view that lagged never keeps a pod from its slots for
//!   long (it could not learn otherwise: a pod the limit holds back submits
//!   nothing to be answered). Other tools' jobs that stay cost at most one
//!   429 a window without the headers, none with them while submits go on.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long an answer counts.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
/// When an answer is judged again against the peers' member records
/// written before it (by then they have reached this pod).
pub(super) const JUDGE_AFTER: Duration = Duration::from_secs(1);

/// The team's jobs at the API when an answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TeamView {
    /// This pod's.
    pub(super) own: usize,
    /// Its peers', as their member records showed them then.
    pub(super) peers: usize,
    /// When (ms since the epoch, this pod's clock).
    pub(super) at_ms: i64,
}

impl From<usize> for TeamView {
    /// A pod alone.
    fn from(own: usize) -> Self {
        Self {
            own,
            peers: 0,
            at_ms: 0,
        }
    }
}

/// One answer of the window.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    /// Jobs on the key by the API's count.
    on_key: usize,
    view: TeamView,
    /// The jobs that are not the team's.
    foreign: usize,
    /// Judged again against the peers' records of its moment.
    judged: bool,
}

/// The learnt job-slot limit.
#[derive(Debug, Clone)]
pub(super) struct SlotLimit {
    max: usize,
    /// The recent answers, oldest first.
    seen: VecDeque<Seen>,
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
            .filter(|o| now.saturating_duration_since(o.at) < WINDOW)
            .map(|o| o.foreign)
            .min()
            .unwrap_or(0);
        self.max.saturating_sub(foreign).max(1)
    }

    /// A submit was accepted at `now` while the team held `team` jobs at
    /// the API (this one included), and the API said `remaining` slots
    /// are left.
    pub(super) fn on_accepted(&mut self, now: Instant, team: impl Into<TeamView>, remaining: Option<u32>) {
        self.unanswered = false;
        if let Some(r) = remaining {
            let on_key = self.max.saturating_sub(r as usize);
            self.observe(now, on_key, team.into());
        }
    }

    /// A submit was refused with 429 at `now` while the team held `team`
    /// jobs: the key is full, the rest is foreign.
    pub(super) fn on_rate_limited(&mut self, now: Instant, team: impl Into<TeamView>) {
        self.unanswered = false;
        self.observe(now, self.max, team.into());
    }

    /// Judges the answers older than [`JUDGE_AFTER`] again, with the
    /// peers' jobs as their records written by each answer's moment show
    /// them (`peers_at`): a peer's submit of the same moment, not yet in
    /// its record when the answer came, is the peer's, not foreign.
    pub(super) fn judge(&mut self, now: Instant, peers_at: impl Fn(i64) -> usize) {
        for o in self.seen.iter_mut() {
            if !o.judged && now.saturating_duration_since(o.at) >= JUDGE_AFTER {
                let peers = peers_at(o.view.at_ms).max(o.view.peers);
                o.foreign = o.on_key.saturating_sub(o.view.own + peers);
                o.judged = true;
            }
        }
    }

    /// When the limit may change without a new answer: an answer is
    /// judged again, or forgotten.
    pub(super) fn next_change(&self, now: Instant) -> Option<Instant> {
        self.seen
            .iter()
            .flat_map(|o| [(!o.judged).then_some(o.at + JUDGE_AFTER), Some(o.at + WINDOW)])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    fn observe(&mut self, now: Instant, on_key: usize, view: TeamView) {
        while self
            .seen
            .front()
            .is_some_and(|o| now.saturating_duration_since(o.at) >= WINDOW)
        {
            self.seen.pop_front();
        }
        self.seen.push_back(Seen {
            at: now,
            on_key,
            view,
            foreign: on_key.saturating_sub(view.own + view.peers),
            judged: false,
        });
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
        assert_eq!(stuck.next_change(t0), Some(t0 + JUDGE_AFTER), "judged again then");
        stuck.judge(t0 + JUDGE_AFTER, |_| 0);
        assert_eq!(stuck.get(t0 + JUDGE_AFTER), 2, "no peer: what the answer said");
        assert_eq!(
            stuck.next_change(t0 + JUDGE_AFTER),
            Some(t0 + WINDOW),
            "the pod wakes then"
        );
        assert_eq!(stuck.get(t0 + WINDOW), 5);
        assert_eq!(stuck.next_change(t0 + WINDOW), None);
    }

    #[test]
    fn an_answer_judged_again_counts_the_peers_submits_of_its_moment() {
        let t0 = Instant::now();
        let mut l = SlotLimit::new(5);
        // This pod's job and the key full: the peers' records showed one
        // job, but three peers' submits of that moment were not in them.
        let view = TeamView {
            own: 1,
            peers: 1,
            at_ms: 1_000,
        };
        l.on_accepted(t0, view, Some(0));
        assert_eq!(l.get(t0), 2, "three look foreign at first");
        assert_eq!(l.next_change(t0), Some(t0 + JUDGE_AFTER));
        // Records written after the answer do not count; those before do.
        let peers_at = |ms: i64| if ms >= 1_000 { 4 } else { 1 };
        l.judge(t0 + JUDGE_AFTER / 2, peers_at);
        assert_eq!(l.get(t0 + JUDGE_AFTER / 2), 2, "not yet");
        l.judge(t0 + JUDGE_AFTER, peers_at);
        assert_eq!(l.get(t0 + JUDGE_AFTER), 5, "the peers' jobs, nothing foreign");
        assert_eq!(l.next_change(t0 + JUDGE_AFTER), Some(t0 + WINDOW));
        // A tool that really holds two: judged again, still two.
        let mut shared = SlotLimit::new(5);
        shared.on_accepted(
            t0,
            TeamView {
                own: 1,
                peers: 2,
                at_ms: 1_000,
            },
            Some(0),
        );
        shared.judge(t0 + JUDGE_AFTER, |_| 2);
        assert_eq!(shared.get(t0 + JUDGE_AFTER), 3);
        // A 429 too; a view of the peers never shrinks by judging.
        let mut full = SlotLimit::new(5);
        full.on_rate_limited(
            t0,
            TeamView {
                own: 2,
                peers: 2,
                at_ms: 1_000,
            },
        );
        full.judge(t0 + JUDGE_AFTER, |_| 0);
        assert_eq!(full.get(t0 + JUDGE_AFTER), 4);
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

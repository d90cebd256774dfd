//! Job slots: how many of the key's active-job slots the pods of this
//! deployment may hold together (`api.max_active_jobs` at most; the team
//! splits them, see [`crate::share`]). The key may be shared with other
//! tools, whose jobs hold slots no member record shows, so the limit
//! learns the slots left to the team instead of collapsing on every 429
//! ("held" below counts the jobs of every pod of the team, by their
//! member records):
//!
//! - until the first answer, one job at a time: its answer tells what is
//!   free (a key whose other user holds slots costs no 429 at start-up);
//! - an accepted submit that says how many slots remain
//!   (`x-ratelimit-remaining`) sets the limit to the jobs held plus those;
//!   one that does not say lets every slot be used;
//! - a 429 holds the limit at the jobs held when it came (the level that
//!   worked), never below one; so does an accepted submit that says none
//!   is left, until a job of this pod ends (its slot is then the next
//!   job's) or a later answer says more are free;
//! - without those headers, the limit grows back by one only after
//!   [`PROBE_AFTER`] jobs completed without a 429, so a key whose other
//!   user holds its slots for minutes costs a 429 every few jobs at most.

/// Jobs completed without a 429 before the limit tries one slot more.
pub(super) const PROBE_AFTER: u32 = 10;

/// The learnt job-slot limit.
#[derive(Debug, Clone)]
pub(super) struct SlotLimit {
    max: usize,
    current: usize,
    /// Jobs completed since the limit last moved down.
    quiet: u32,
    /// No submit has been answered yet.
    unanswered: bool,
}

impl SlotLimit {
    /// One job until the first answer, then up to `max`.
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            current: 1,
            quiet: 0,
            unanswered: true,
        }
    }

    /// The limit now.
    pub(super) fn get(&self) -> usize {
        self.current
    }

    /// A submit was accepted while `held` jobs (this one included) hold
    /// slots, and the API said `remaining` slots are left.
    pub(super) fn on_accepted(&mut self, held: usize, remaining: Option<u32>) {
        match remaining {
            Some(r) => {
                self.current = (held + r as usize).clamp(1, self.max);
                self.quiet = 0;
            }
            None if self.unanswered => self.current = self.max,
            None => {}
        }
        self.unanswered = false;
    }

    /// A submit was refused with 429 while `held` jobs held slots: what
    /// worked is what is held.
    pub(super) fn on_rate_limited(&mut self, held: usize) {
        self.current = held.clamp(1, self.max);
        self.quiet = 0;
        self.unanswered = false;
    }

    /// A job completed without a 429: after [`PROBE_AFTER`] of those, one
    /// slot more.
    pub(super) fn on_success(&mut self) {
        if self.current >= self.max {
            return;
        }
        self.quiet += 1;
        if self.quiet >= PROBE_AFTER {
            self.current += 1;
            self.quiet = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of 5 slots, `foreign` of them held by another tool for the
    /// whole run: how many 429s `jobs` jobs of this pod meet, and the
    /// limit at the end. Each round the pod fills its limit; a submit
    /// beyond the free slots gets 429; one job completes per round.
    fn run(foreign: usize, jobs: u32, headers: bool) -> (u32, usize) {
        let mut l = SlotLimit::new(5);
        if !headers {
            // Without headers the first answer opens every slot.
            l.on_accepted(0, None);
        }
        let free = 5 - foreign;
        let (mut held, mut done, mut refused) = (0usize, 0u32, 0u32);
        while done < jobs {
            while held < l.get() {
                if held < free {
                    held += 1;
                    l.on_accepted(held, headers.then(|| (free - held) as u32));
                } else {
                    refused += 1;
                    l.on_rate_limited(held);
                    break;
                }
            }
            held -= 1;
            done += 1;
            l.on_success();
        }
        (refused, l.get())
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
        let mut l = SlotLimit::new(5);
        assert_eq!(l.get(), 1);
        l.on_accepted(1, Some(2));
        assert_eq!(l.get(), 3, "another user holds two");
        let mut silent = SlotLimit::new(5);
        silent.on_accepted(1, None);
        assert_eq!(silent.get(), 5, "an API that does not say: every slot");
        silent.on_rate_limited(4);
        silent.on_accepted(4, None);
        assert_eq!(silent.get(), 4, "after that, only what was learnt");
    }

    #[test]
    fn a_429_holds_what_worked_never_below_one() {
        let mut l = SlotLimit::new(5);
        l.on_accepted(1, None);
        l.on_rate_limited(3);
        assert_eq!(l.get(), 3);
        l.on_rate_limited(0);
        assert_eq!(l.get(), 1);
        for _ in 0..PROBE_AFTER {
            l.on_success();
        }
        assert_eq!(l.get(), 2);
        l.on_accepted(2, Some(3));
        assert_eq!(l.get(), 5);
        l.on_accepted(4, Some(9));
        assert_eq!(l.get(), 5, "never above the maximum");
        assert_eq!(SlotLimit::new(0).get(), 1);
    }
}

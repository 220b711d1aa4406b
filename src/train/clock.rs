//! `checkpoint.every_minutes`: rank 0's wall clock asks for a checkpoint when that long has
//! passed since the last one (whatever wrote it), so a preempted job loses at most that much
//! work however slow its steps are.
//!
//! The request travels in the ranks' after-step vote ([`crate::dist::Agreement`]); with several
//! ranks that vote is read one step later, so a request is made once and stays pending until
//! a checkpoint is written, and a request that a checkpoint has overtaken is dropped.
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct CheckpointClock {
    every: Option<Duration>,
    last: Instant,
    pending: bool,
    /// The step of the last checkpoint this run wrote (or started from).
    saved_step: u64,
}

impl CheckpointClock {
    /// A clock for `minutes` (0 = off), started at `now`; the run starts at `step`.
    pub(super) fn new(minutes: f64, now: Instant, step: u64) -> Self {
        let every = (minutes > 0.0)
            .then(|| Duration::try_from_secs_f64(minutes * 60.0).ok())
            .flatten();
        Self {
            every,
            last: now,
            pending: false,
            saved_step: step,
        }
    }

    /// Whether to ask for a checkpoint at `now`: true once per elapsed period, then not again
    /// until [`saved`](Self::saved) restarts the period.
    pub(super) fn request(&mut self, now: Instant) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        if self.pending || now.duration_since(self.last) < every {
            return false;
        }
        self.pending = true;
        true
    }

    /// Whether a request made after step `cast_at` still stands: a checkpoint written at or
    /// after that step already covers it. Every rank knows the same checkpoint steps, so
    /// every rank drops the same stale requests.
    pub(super) fn still_wanted(&self, cast_at: u64) -> bool {
        self.saved_step < cast_at
    }

    /// A checkpoint of `step` was written at `now`.
    pub(super) fn saved(&mut self, step: u64, now: Instant) {
        self.last = now;
        self.pending = false;
        self.saved_step = step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn asks_once_per_period_and_restarts_at_each_checkpoint() {
        let t0 = Instant::now();
        let mut c = CheckpointClock::new(2.0, t0, 0);
        assert!(!c.request(t0 + MIN));
        assert!(c.request(t0 + 2 * MIN));
        // Pending until written: a later step does not ask again.
        assert!(!c.request(t0 + 3 * MIN));
        c.saved(7, t0 + 3 * MIN);
        assert!(!c.request(t0 + 4 * MIN));
        assert!(c.request(t0 + 5 * MIN));
    }

    #[test]
    fn a_step_based_checkpoint_restarts_the_period_and_overtakes_a_request() {
        let t0 = Instant::now();
        let mut c = CheckpointClock::new(1.0, t0, 10);
        assert!(c.request(t0 + MIN));
        // The request was cast after step 12; a checkpoint of step 12 was written before the
        // ranks read it.
        c.saved(12, t0 + MIN);
        assert!(!c.still_wanted(12));
        assert!(c.still_wanted(13));
        assert!(!c.request(t0 + MIN + MIN / 2));
    }

    #[test]
    fn zero_minutes_never_asks() {
        let t0 = Instant::now();
        let mut c = CheckpointClock::new(0.0, t0, 0);
        assert!(!c.request(t0 + 1000 * MIN));
    }
}

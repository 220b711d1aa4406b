//! Training throughput: samples per second and the fraction of the time spent waiting for data,
//! over the current logging window and over the whole run, with evaluation time left out (it is
//! not training).
use std::time::{Duration, Instant};

/// Throughput over some span of training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub samples_per_s: f64,
    pub data_wait_fraction: f64,
}

/// Counts over a span that started at `start`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Instant,
    samples: u64,
    waited: Duration,
    excluded: Duration,
}

impl Span {
    fn new(start: Instant) -> Self {
        Self {
            start,
            samples: 0,
            waited: Duration::ZERO,
            excluded: Duration::ZERO,
        }
    }

    fn rate(&self, now: Instant) -> Rate {
        let secs = (now.saturating_duration_since(self.start))
            .saturating_sub(self.excluded)
            .as_secs_f64()
            .max(1e-9);
        Rate {
            samples_per_s: self.samples as f64 / secs,
            data_wait_fraction: self.waited.as_secs_f64() / secs,
        }
    }
}

/// The logging window's and the run's throughput.
#[derive(Debug, Clone)]
pub struct Meter {
    window: Span,
    run: Span,
}

impl Meter {
    /// A meter whose window and run start at `now`.
    pub fn starting_at(now: Instant) -> Self {
        Self {
            window: Span::new(now),
            run: Span::new(now),
        }
    }

    /// Time spent blocked on the data loader.
    pub fn waited(&mut self, d: Duration) {
        self.window.waited += d;
        self.run.waited += d;
    }

    /// Samples a finished step trained on (the global batch).
    pub fn trained(&mut self, samples: u64) {
        self.window.samples += samples;
        self.run.samples += samples;
    }

    /// Time spent on something other than training (evaluation).
    pub fn exclude(&mut self, d: Duration) {
        self.window.excluded += d;
        self.run.excluded += d;
    }

    /// The window's throughput up to `now`; the next window starts there.
    pub fn take_window(&mut self, now: Instant) -> Rate {
        let rate = self.window.rate(now);
        self.window = Span::new(now);
        rate
    }

    /// The whole run's throughput up to `now`.
    pub fn run(&self, now: Instant) -> Rate {
        self.run.rate(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_leave_out_excluded_time_and_windows_restart() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = Meter::starting_at(t0);
        m.trained(100);
        m.waited(s(1));
        m.exclude(s(2));
        // 6 s on the clock, 2 of them evaluating: 100 samples in 4 s, 1 s of it waiting.
        let w = m.take_window(t0 + s(6));
        assert_eq!(
            w,
            Rate {
                samples_per_s: 25.0,
                data_wait_fraction: 0.25
            }
        );
        m.trained(60);
        let w = m.take_window(t0 + s(8));
        assert_eq!(w.samples_per_s, 30.0);
        assert_eq!(w.data_wait_fraction, 0.0);
        // The run: 160 samples in 8 s less 2 s of evaluation.
        let r = m.run(t0 + s(8));
        assert!((r.samples_per_s - 160.0 / 6.0).abs() < 1e-12);
        assert!((r.data_wait_fraction - 1.0 / 6.0).abs() < 1e-12);
    }
}

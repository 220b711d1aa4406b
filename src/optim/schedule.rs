//! Learning-rate schedules, stepped once per optimizer step (OpenCLIP's `scheduler.py`).
use crate::config::{OptimConfig, Schedule};

/// The learning rate as a function of the optimizer step, from `[optim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    kind: Schedule,
    lr: f64,
    min_lr: f64,
    warmup: u64,
    steps: u64,
    cooldown: u64,
}

impl LrSchedule {
    /// The schedule `cfg` describes (`lr`, `min_lr`, `warmup_steps`, `steps`, `schedule`,
    /// `cooldown_steps`).
    pub fn new(cfg: &OptimConfig) -> Self {
        Self {
            kind: cfg.schedule,
            lr: cfg.lr,
            min_lr: cfg.min_lr,
            warmup: cfg.warmup_steps,
            steps: cfg.steps,
            cooldown: cfg.cooldown_steps,
        }
    }

    /// Learning rate for 0-based optimizer step `step`.
    ///
    /// Warmup is linear, `lr·(step+1)/warmup`, so step 0 already trains. Past the end of the run
    /// the schedule stays at its final value rather than extrapolating.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        match self.kind {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let es = self.steps.saturating_sub(self.warmup);
                if es == 0 {
                    return self.min_lr;
                }
                let e = (step - self.warmup).min(es) as f64;
                let cos = (std::f64::consts::PI * e / es as f64).cos();
                self.min_lr + 0.5 * (1.0 + cos) * (self.lr - self.min_lr)
            }
            Schedule::ConstantCooldown => {
                let start = self.steps.saturating_sub(self.cooldown);
                if step < start {
                    return self.lr;
                }
                let es = self.steps - start;
                if es == 0 {
                    return self.min_lr;
                }
                // Linear from lr at `start` towards min_lr, as OpenCLIP's const_lr_cooldown with
                // power 1: the last step (steps−1) is one decrement above min_lr.
                let e = (step - start).min(es) as f64;
                let decay = 1.0 - e / es as f64;
                self.min_lr + decay * (self.lr - self.min_lr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: Schedule) -> LrSchedule {
        LrSchedule::new(&OptimConfig {
            schedule: kind,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 10,
            steps: 110,
            cooldown_steps: 20,
            ..OptimConfig::default()
        })
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-15, "{a} != {b}");
    }

    #[test]
    fn warmup_is_linear_and_starts_above_zero() {
        for kind in [
            Schedule::Cosine,
            Schedule::Constant,
            Schedule::ConstantCooldown,
        ] {
            let s = sched(kind);
            close(s.lr_at(0), 1e-4); // 1e-3 · 1/10
            close(s.lr_at(4), 5e-4); // 1e-3 · 5/10
            close(s.lr_at(9), 1e-3); // warmup − 1: 1e-3 · 10/10
        }
    }

    #[test]
    fn cosine_key_steps() {
        let s = sched(Schedule::Cosine);
        // e = step − 10 over es = 100 steps.
        close(s.lr_at(10), 1e-3); // e = 0: cos 0 = 1 → lr
        close(s.lr_at(60), 5.05e-4); // e = 50: cos(π/2) = 0 → (lr + min)/2 = 5.05e-4
        // e = 25: 1e-5 + 0.5·(1 + cos(π/4))·9.9e-4 = 1e-5 + 0.853553390593·9.9e-4
        close(
            s.lr_at(35),
            1e-5 + 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) * 9.9e-4,
        );
        // last step e = 99: 1e-5 + 0.5·(1 + cos(0.99π))·9.9e-4 = 1e-5 + 2.4425e-7 (≈ min_lr)
        let last = s.lr_at(109);
        assert!((last - 1.024425e-5).abs() < 1e-10, "{last}");
        close(s.lr_at(500), 1e-5); // beyond the run: stays at min_lr
    }

    #[test]
    fn constant_and_cooldown_key_steps() {
        let c = sched(Schedule::Constant);
        close(c.lr_at(10), 1e-3);
        close(c.lr_at(109), 1e-3);
        let cd = sched(Schedule::ConstantCooldown);
        close(cd.lr_at(10), 1e-3);
        close(cd.lr_at(89), 1e-3); // cooldown starts at 110 − 20 = 90
        close(cd.lr_at(90), 1e-3); // e = 0
        close(cd.lr_at(100), 1e-5 + 0.5 * 9.9e-4); // e = 10 of 20: halfway = 5.05e-4
        close(cd.lr_at(109), 1e-5 + 0.05 * 9.9e-4); // e = 19: 1/20 of the way left = 5.95e-5
        close(cd.lr_at(110), 1e-5);
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = LrSchedule::new(&OptimConfig {
            warmup_steps: 0,
            steps: 4,
            lr: 2.0,
            min_lr: 0.0,
            schedule: Schedule::Cosine,
            ..OptimConfig::default()
        });
        close(s.lr_at(0), 2.0);
        close(s.lr_at(2), 1.0); // cos(π/2)
    }
}

//! Non-finite steps, counted on the device so that no step waits for the GPU.
//!
//! A step is skipped when its loss or its gradients are not finite: the flag (`found_inf`, as
//! `torch.amp` names it) gates the optimizer update on the device. Counting what was skipped
//! needs no host read either; the counters are read when metrics are logged, at checkpoints and
//! at the last step, which is where `optim.max_bad_steps` is enforced. Because the longest run
//! of bad steps since the last read is kept, a run of `max_bad_steps` that ended between two
//! reads still stops the run, a few steps later than a per-step check would.
//!
//! With fp16, a gradient overflow on a finite loss is the loss scaler's normal calibration (it
//! backs off and the step is skipped, as GradScaler does): it is counted apart, as an overflow,
//! and does not count towards `optim.max_bad_steps`; a non-finite loss does.
use tch::{Device, Kind, Tensor};

/// Device-side counters of skipped steps; see the module docs.
pub(super) struct BadSteps {
    /// f64 `[5]`: bad steps in a row now, the longest such run since the last read, bad steps
    /// since the last read, the last bad step's number, overflows since the last read.
    counts: Tensor,
    /// Whether a non-finite gradient on a finite loss is an fp16 overflow rather than bad.
    overflow_is_calibration: bool,
}

/// What the counters held at a read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct BadStepsRead {
    pub in_a_row: u32,
    pub longest_run: u32,
    pub new_bad: u64,
    pub last_bad_step: u64,
    pub new_overflows: u64,
}

const IN_A_ROW: i64 = 0;
const LONGEST: i64 = 1;
const NEW_BAD: i64 = 2;
const LAST_BAD: i64 = 3;
const OVERFLOWS: i64 = 4;

impl BadSteps {
    /// Counters on `device`, continuing a run with `in_a_row` bad steps at its end.
    pub fn new(device: Device, in_a_row: u32, fp16: bool) -> Self {
        let counts = Tensor::zeros([5], (Kind::Double, device));
        let _ = counts.get(IN_A_ROW).fill_(in_a_row as f64);
        Self {
            counts,
            overflow_is_calibration: fp16,
        }
    }

    /// Whether a step with this `loss` and gradient `norm` (both on the device) must be skipped:
    /// fp32 `[1]`, 1.0 = skip. `overflow` (fp32 `[1]`), when given, is what the loss scaler's
    /// unscale found and joins the decision.
    pub fn found_inf(loss: &Tensor, norm: &Tensor, overflow: Option<&Tensor>) -> Tensor {
        let finite = loss.isfinite().logical_and(&norm.isfinite());
        let skip = finite.logical_not().to_kind(Kind::Float).reshape([1]);
        match overflow {
            Some(o) => skip.maximum(o),
            None => skip,
        }
    }

    /// Counts step `step` (1-based), skipped when `found_inf` is 1, whose loss was `loss`.
    pub fn record(&mut self, step: u64, loss: &Tensor, found_inf: &Tensor) {
        tch::no_grad(|| {
            let skipped = found_inf.to_kind(Kind::Double).reshape([]);
            let bad = if self.overflow_is_calibration {
                loss.isfinite()
                    .logical_not()
                    .to_kind(Kind::Double)
                    .reshape([])
            } else {
                skipped.shallow_clone()
            };
            let c = &self.counts;
            let in_a_row = (c.get(IN_A_ROW) + 1.0) * &bad;
            c.get(IN_A_ROW).copy_(&in_a_row);
            c.get(LONGEST).copy_(&c.get(LONGEST).maximum(&in_a_row));
            let _ = c.get(NEW_BAD).g_add_(&bad);
            let last = c.get(LAST_BAD).where_scalarother(&bad.eq(0.0), step as f64);
            c.get(LAST_BAD).copy_(&last);
            let _ = c.get(OVERFLOWS).g_add_(&(&skipped - &bad));
        });
    }

    /// Reads the counters (one device sync) and starts a new reading period.
    pub fn read(&mut self) -> BadStepsRead {
        let v = Vec::<f64>::try_from(&self.counts.to_device(Device::Cpu))
            .expect("a f64 [5] tensor converts to Vec<f64>");
        tch::no_grad(|| {
            for i in [NEW_BAD, OVERFLOWS] {
                let _ = self.counts.get(i).fill_(0.0);
            }
            self.counts.get(LONGEST).copy_(&self.counts.get(IN_A_ROW));
        });
        BadStepsRead {
            in_a_row: v[IN_A_ROW as usize] as u32,
            longest_run: v[LONGEST as usize] as u32,
            new_bad: v[NEW_BAD as usize] as u64,
            last_bad_step: v[LAST_BAD as usize] as u64,
            new_overflows: v[OVERFLOWS as usize] as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(x: f32) -> Tensor {
        Tensor::from_slice(&[x])
    }

    fn step(b: &mut BadSteps, n: u64, loss: f32, norm: f32) {
        let loss = Tensor::from(loss);
        let f = BadSteps::found_inf(&loss, &Tensor::from(norm), None);
        b.record(n, &loss, &f);
    }

    #[test]
    fn counts_runs_of_bad_steps_between_reads() {
        let mut b = BadSteps::new(Device::Cpu, 0, false);
        step(&mut b, 1, 1.0, 1.0);
        step(&mut b, 2, f32::NAN, 1.0);
        step(&mut b, 3, 1.0, f32::INFINITY);
        step(&mut b, 4, f32::INFINITY, 1.0);
        step(&mut b, 5, 1.0, 2.0);
        let r = b.read();
        assert_eq!(
            r,
            BadStepsRead {
                in_a_row: 0,
                longest_run: 3,
                new_bad: 3,
                last_bad_step: 4,
                new_overflows: 0,
            }
        );
        // A new period starts from the current run, not from the old longest one.
        step(&mut b, 6, f32::NAN, 1.0);
        let r = b.read();
        assert_eq!(
            (r.in_a_row, r.longest_run, r.new_bad, r.last_bad_step),
            (1, 1, 1, 6)
        );
        step(&mut b, 7, f32::NAN, 1.0);
        assert_eq!(b.read().in_a_row, 2);
        // Resumed with a run in progress.
        let mut b = BadSteps::new(Device::Cpu, 4, false);
        step(&mut b, 9, f32::NAN, 1.0);
        assert_eq!(b.read().longest_run, 5);
    }

    #[test]
    fn with_fp16_an_overflow_on_a_finite_loss_is_not_a_bad_step() {
        let mut b = BadSteps::new(Device::Cpu, 0, true);
        let loss = Tensor::from(1.0f32);
        let f = BadSteps::found_inf(&loss, &Tensor::from(1.0f32), Some(&t(1.0)));
        assert_eq!(f.double_value(&[0]), 1.0);
        b.record(1, &loss, &f);
        step(&mut b, 2, f32::NAN, 1.0);
        let r = b.read();
        assert_eq!((r.in_a_row, r.new_bad, r.new_overflows), (1, 1, 1));
    }
}

//! Mixed precision: a bf16/fp16 autocast scope and the dynamic loss scaler fp16 needs.
//!
//! `tch::autocast` only toggles CUDA autocast with its default dtype (fp16) and does nothing
//! without a GPU, so the scope goes through our C++ shim, which sets device type and dtype
//! explicitly (see `csrc/shim.cpp`).
use tch::{Device, Kind, Tensor};

use crate::config::Precision;
use crate::shim;

/// Errors from entering an autocast scope.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    /// libtorch refused to enable autocast (e.g. an unsupported device/dtype pair).
    #[error("cannot enable {precision:?} autocast on {device:?}: {message}")]
    Autocast {
        device: Device,
        precision: Precision,
        message: String,
    },
    /// A saved scaler state no scaler could hold.
    #[error("cannot restore the fp16 loss scaler: {0}")]
    BadState(String),
    /// A libtorch kernel of the loss scaler failed.
    #[error("fp16 loss scaling failed: {0}")]
    Kernel(String),
}

/// Entry point for autocast scopes; see [`Autocast::enter`].
pub struct Autocast;

/// An open autocast scope; leaving it (drop) restores the state that was in effect before.
///
/// Autocast state is thread-local in libtorch, so the guard is neither `Send` nor `Sync`: it must
/// be dropped on the thread that created it.
#[must_use = "autocast is only active while the guard is alive"]
pub struct AutocastGuard {
    /// `None` for fp32 (nothing was changed); otherwise the device type and the saved state.
    active: Option<(bool, shim::AutocastPrev)>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Autocast {
    /// Enables autocast on `device`'s type with `precision`'s dtype until the guard drops.
    /// `Precision::Fp32` returns a guard that changes nothing.
    pub fn enter(device: Device, precision: Precision) -> Result<AutocastGuard, PrecisionError> {
        let fp16 = match precision {
            Precision::Fp32 => {
                return Ok(AutocastGuard {
                    active: None,
                    _not_send: std::marker::PhantomData,
                });
            }
            Precision::Bf16 => false,
            Precision::Fp16 => true,
        };
        // Autocast is per device *type*; every CUDA ordinal shares one setting.
        let cuda = matches!(device, Device::Cuda(_));
        let prev =
            shim::autocast_enter(cuda, fp16).map_err(|message| PrecisionError::Autocast {
                device,
                precision,
                message,
            })?;
        Ok(AutocastGuard {
            active: Some((cuda, prev)),
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        if let Some((cuda, prev)) = self.active.take() {
            shim::autocast_exit(cuda, prev);
        }
    }
}

/// Dynamic loss scaling for fp16 training with `torch.amp.GradScaler`'s semantics and kernels:
/// the loss is multiplied by `scale` before backward so small gradients survive fp16; gradients
/// are divided by it (and checked for inf/nan) before clipping; a step whose gradients overflow
/// is skipped and the scale multiplied by `backoff`; after `growth_interval` good steps in a row
/// it is multiplied by `growth`.
///
/// The scale and the good-step count live on the device and are only updated by device kernels
/// (`_amp_foreach_non_finite_check_and_unscale_`, `_amp_update_scale_`), so a step never waits
/// for the GPU; [`state`](Self::state) reads them for a checkpoint.
#[derive(Debug)]
pub struct DynamicLossScaler {
    /// fp32 `[1]`, as GradScaler's `_scale`.
    scale: Tensor,
    /// int32 `[1]`: good steps since the last change of scale (GradScaler's `_growth_tracker`).
    growth_tracker: Tensor,
    growth: f64,
    backoff: f64,
    growth_interval: i64,
}

/// The smallest loss scale the scaler keeps (2^-24, fp16's smallest subnormal): an O(1) loss
/// scaled below it has no fp16 gradient but 0, so every "good" step would change nothing. The
/// scale is clamped to it after a back-off, and a config or checkpoint below it is refused.
pub const MIN_LOSS_SCALE: f64 = 1.0 / 16_777_216.0;

/// The rule `scale` breaks as a loss scale (an fp32 tensor), worded to follow "must", or `None`.
pub fn loss_scale_problem(scale: f64) -> Option<String> {
    let ok = scale.is_finite() && (MIN_LOSS_SCALE..=f32::MAX as f64).contains(&scale);
    (!ok).then(|| {
        format!(
            "be finite, at least 2^-24 (a smaller one leaves every fp16 gradient 0) and at \
             most fp32's largest value ({:e})",
            f32::MAX
        )
    })
}

/// The scaler's state as a checkpoint stores it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaleState {
    pub scale: f64,
    /// Good steps counted towards the next growth.
    pub good_steps: u64,
}

impl LossScaleState {
    /// Every field no scaler growing after `growth_interval` good steps could have saved, as
    /// `loss_scale.field = value: why`.
    pub fn problems(&self, growth_interval: u64) -> Vec<String> {
        let mut no = Vec::new();
        if let Some(why) = loss_scale_problem(self.scale) {
            no.push(format!(
                "loss_scale.scale = {:e}: an fp16 loss scale must {why}",
                self.scale
            ));
        }
        // The count restarts at 0 when it reaches the interval.
        let interval = growth_interval.max(1);
        if self.good_steps >= interval {
            no.push(format!(
                "loss_scale.good_steps = {}: the count restarts at 0 after \
                 run.loss_scale_growth_interval = {interval} good steps",
                self.good_steps
            ));
        }
        no
    }
}

impl DynamicLossScaler {
    /// A scaler on `device` starting at `init_scale`, growing ×2 after `growth_interval` good
    /// steps and halving on overflow (GradScaler's factors).
    pub fn new(device: Device, init_scale: f64, growth_interval: u64) -> Self {
        Self {
            scale: Tensor::full([1], init_scale, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
            growth: 2.0,
            backoff: 0.5,
            growth_interval: growth_interval.max(1) as i64,
        }
    }

    /// `loss · scale`, to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale
    }

    /// Divides every defined gradient in place by the scale and sets `found_inf` (fp32 `[1]` on
    /// the device) to 1 when any of them holds inf/nan; it is never reset here, so several
    /// checks can share one flag.
    pub fn unscale_(&self, grads: &[Tensor], found_inf: &Tensor) -> Result<(), PrecisionError> {
        // GradScaler computes the reciprocal in double, then rounds it to fp32.
        let inv_scale = self
            .scale
            .to_kind(Kind::Double)
            .reciprocal()
            .to_kind(Kind::Float);
        let grads: Vec<Tensor> = grads
            .iter()
            .filter(|g| g.defined())
            .map(Tensor::shallow_clone)
            .collect();
        shim::amp_unscale_(&grads, found_inf, &inv_scale).map_err(PrecisionError::Kernel)
    }

    /// Adjusts the scale after a step attempt, on the device: backs off on overflow (and
    /// restarts the count), grows after `growth_interval` consecutive good steps.
    pub fn update(&mut self, found_inf: &Tensor) {
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            found_inf,
            self.growth,
            self.backoff,
            self.growth_interval,
        );
        // Back-offs halve without end (GradScaler's too); below the floor no step could learn.
        let _ = self.scale.clamp_min_(MIN_LOSS_SCALE);
    }

    /// The current scale and good-step count (reads the device).
    pub fn state(&self) -> LossScaleState {
        LossScaleState {
            scale: self.scale.double_value(&[0]),
            good_steps: self.growth_tracker.int64_value(&[0]).max(0) as u64,
        }
    }

    /// Continues from a checkpoint's state, refused when it is not one a scaler could hold
    /// (see [`LossScaleState::problems`]: the run's preflight names the file first).
    pub fn restore(&mut self, state: LossScaleState) -> Result<(), PrecisionError> {
        let no = state.problems(self.growth_interval as u64);
        if !no.is_empty() {
            return Err(PrecisionError::BadState(no.join("; ")));
        }
        let _ = self.scale.fill_(state.scale);
        let _ = self.growth_tracker.fill_(state.good_steps as i64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_autocast_scope_on_cpu() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        {
            let _g = Autocast::enter(Device::Cpu, Precision::Bf16).unwrap();
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            {
                // Nested fp32 scope changes nothing.
                let _inner = Autocast::enter(Device::Cpu, Precision::Fp32).unwrap();
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        {
            let _g = Autocast::enter(Device::Cpu, Precision::Fp16).unwrap();
            assert_eq!(a.matmul(&b).kind(), Kind::Half);
            {
                // A nested bf16 scope switches dtype and restores fp16 on exit.
                let _inner = Autocast::enter(Device::Cpu, Precision::Bf16).unwrap();
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            assert_eq!(a.matmul(&b).kind(), Kind::Half);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        let _g = Autocast::enter(Device::Cpu, Precision::Fp32).unwrap();
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }

    /// One step attempt: unscale `grads`, update the scale; returns the overflow flag.
    fn attempt(s: &mut DynamicLossScaler, grads: &[Tensor]) -> f64 {
        let f = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        s.unscale_(grads, &f).unwrap();
        s.update(&f);
        f.double_value(&[0])
    }

    fn state(scale: f64, good_steps: u64) -> LossScaleState {
        LossScaleState { scale, good_steps }
    }

    #[test]
    fn loss_scaler_unscales_skips_backs_off_and_grows_like_grad_scaler() {
        let mut s = DynamicLossScaler::new(Device::Cpu, 65536.0, 3);
        let scaled = s.scale_loss(&Tensor::from(2.0f32));
        assert_eq!(scaled.double_value(&[0]), 131072.0);
        let g = Tensor::from_slice(&[65536.0f32, -131072.0]);
        assert_eq!(attempt(&mut s, &[g.shallow_clone(), Tensor::new()]), 0.0);
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, -2.0]);
        assert_eq!(s.state(), state(65536.0, 1));
        // An overflowing gradient: flagged, scale halved, good-step count restarts.
        let bad = Tensor::from_slice(&[1.0f32, f32::INFINITY]);
        assert_eq!(attempt(&mut s, &[g.shallow_clone(), bad]), 1.0);
        assert_eq!(s.state(), state(32768.0, 0));
        attempt(&mut s, &[Tensor::from_slice(&[f32::NAN])]);
        assert_eq!(s.state().scale, 16384.0);
        for good in 1..=2 {
            attempt(&mut s, &[Tensor::from_slice(&[1.0f32])]);
            assert_eq!(s.state(), state(16384.0, good));
        }
        attempt(&mut s, &[Tensor::from_slice(&[1.0f32])]);
        assert_eq!(s.state(), state(32768.0, 0));
        let mut r = DynamicLossScaler::new(Device::Cpu, 1.0, 3);
        r.restore(state(32768.0, 2)).unwrap();
        assert_eq!(r.state(), state(32768.0, 2));
    }

    #[test]
    fn the_scale_never_backs_off_below_its_floor_and_no_state_outside_it_restores() {
        let mut s = DynamicLossScaler::new(Device::Cpu, 1e-7, 3);
        for _ in 0..4 {
            attempt(&mut s, &[Tensor::from_slice(&[f32::INFINITY])]);
        }
        assert_eq!(s.state().scale, MIN_LOSS_SCALE);
        for (bad, said) in [
            (
                state(0.0, 0),
                "loss_scale.scale = 0e0: an fp16 loss scale must be finite",
            ),
            (state(1e300, 0), "loss_scale.scale = 1e300"),
            (state(f64::NAN, 0), "loss_scale.scale = NaN"),
            (state(1e-30, 0), "at least 2^-24"),
            (
                state(8.0, 3),
                "loss_scale.good_steps = 3: the count restarts at 0 after",
            ),
        ] {
            let err = s.restore(bad).unwrap_err().to_string();
            assert!(err.contains(said), "{said:?} missing from {err}");
        }
        assert_eq!(
            s.state().scale,
            MIN_LOSS_SCALE,
            "a refused state changes nothing"
        );
    }
}

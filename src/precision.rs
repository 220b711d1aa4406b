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

/// Dynamic loss scaling for fp16 training, as `torch.amp.GradScaler`: the loss is multiplied by
/// `scale` before backward so small gradients survive fp16; gradients are divided by it before
/// the step. A step whose gradients overflow is skipped and the scale halved; after
/// `growth_interval` good steps in a row the scale doubles.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicLossScaler {
    scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u64,
    good_steps: u64,
    found_inf: bool,
}

impl Default for DynamicLossScaler {
    /// GradScaler's defaults: scale 2^16, ×2 every 2000 good steps, ÷2 on overflow.
    fn default() -> Self {
        Self::new(65536.0, 2.0, 0.5, 2000)
    }
}

impl DynamicLossScaler {
    /// A scaler with explicit initial scale, growth/backoff factors and growth interval.
    pub fn new(init_scale: f64, growth_factor: f64, backoff_factor: f64, interval: u64) -> Self {
        Self {
            scale: init_scale,
            growth_factor,
            backoff_factor,
            growth_interval: interval.max(1),
            good_steps: 0,
            found_inf: false,
        }
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `loss · scale`, to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Divides every defined gradient in place by the scale and records whether any of them holds
    /// inf/nan (also returned). The check stays on the device until one final host read.
    pub fn unscale_(&mut self, grads: &[Tensor]) -> bool {
        let inv = 1.0 / self.scale;
        let mut non_finite: Option<Tensor> = None;
        tch::no_grad(|| {
            for g in grads.iter().filter(|g| g.defined()) {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(inv);
                let bad = g.isfinite().logical_not().any();
                non_finite = Some(match non_finite.take() {
                    Some(acc) => acc.logical_or(&bad),
                    None => bad,
                });
            }
        });
        self.found_inf = non_finite.is_some_and(|t| t.to_kind(Kind::Bool).int64_value(&[]) != 0);
        self.found_inf
    }

    /// Whether the last [`unscale_`](Self::unscale_) saw inf/nan; the optimizer step must then be
    /// skipped.
    pub fn found_inf(&self) -> bool {
        self.found_inf
    }

    /// Adjusts the scale after a step attempt: halves it (and restarts the count) on overflow,
    /// doubles it after `growth_interval` consecutive good steps.
    pub fn update(&mut self) {
        if self.found_inf {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        } else {
            self.good_steps += 1;
            if self.good_steps == self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        }
        self.found_inf = false;
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

    #[test]
    fn loss_scaler_backoff_and_growth() {
        let mut s = DynamicLossScaler::new(65536.0, 2.0, 0.5, 3);
        assert_eq!(
            s.scale_loss(&Tensor::from(2.0f32)).double_value(&[]),
            131072.0
        );
        let g = Tensor::from_slice(&[65536.0f32, -131072.0]);
        assert!(!s.unscale_(&[g.shallow_clone(), Tensor::new()]));
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, -2.0]);
        s.update();
        // An overflowing gradient: step skipped, scale halved, good-step count restarts.
        let bad = Tensor::from_slice(&[1.0f32, f32::INFINITY]);
        assert!(s.unscale_(&[g.shallow_clone(), bad]));
        assert!(s.found_inf());
        s.update();
        assert_eq!(s.scale(), 32768.0);
        let nan = Tensor::from_slice(&[f32::NAN]);
        assert!(s.unscale_(&[nan]));
        s.update();
        assert_eq!(s.scale(), 16384.0);
        for _ in 0..2 {
            assert!(!s.unscale_(&[Tensor::from_slice(&[1.0f32])]));
            s.update();
            assert_eq!(s.scale(), 16384.0);
        }
        assert!(!s.unscale_(&[Tensor::from_slice(&[1.0f32])]));
        s.update();
        assert_eq!(s.scale(), 32768.0);
        assert_eq!(DynamicLossScaler::default().scale(), 65536.0);
    }
}

//! AdamW with explicit, saveable state, and gradient clipping, in two kernels.
//!
//! Written here rather than taken from `nn::AdamW` because tch cannot save or load Adam moments
//! (its C API has no call for them). The update itself runs in one of two kernels (`optim.fused`):
//!
//! - **fused** (the default): ATen's `_fused_adamw_` through our shim (`csrc/optim.cpp`), one
//!   call per group of parameters sharing weight decay and learning rate, exactly what
//!   `torch.optim.AdamW(fused=True)` runs. Per-parameter step counts are fp32 scalars on the
//!   device, as torch's `state_steps`, and the skip flag of a non-finite step (`found_inf`) is
//!   applied on the device too, so a training step never waits for the device to read a value.
//! - **per-tensor**: plain tch ops reproducing `torch.optim.AdamW`'s single-tensor arithmetic op
//!   for op, a few kernels per parameter, with exact integer step counts on the host. It is the
//!   readable reference the fused kernel is tested against.
//!
//! Both keep fp32 moments whatever the parameter dtype and save the same state, so a checkpoint
//! written by one loads into the other.
use tch::{Device, Kind, Tensor};

use super::fused;
use super::state::Count;
use crate::config::OptimConfig;
use crate::shim::{self, AdamWHyper};

/// One parameter and its Adam state.
pub(super) struct Param {
    pub(super) name: String,
    pub(super) tensor: Tensor,
    pub(super) decay: bool,
    /// Multiplier of the step's learning rate for this parameter (fine-tuning's per-tower and
    /// layer-wise rates); weight decay uses the scaled rate too, as a torch param group would.
    pub(super) lr_scale: f64,
    /// Moments are kept in fp32 whatever the parameter dtype. Only parameters that require grad
    /// get them (frozen towers cost no optimizer memory); allocating at construction instead of
    /// on the first step gives the state a fixed set of names to save and check.
    pub(super) exp_avg: Tensor,
    pub(super) exp_avg_sq: Tensor,
    /// Steps this parameter actually took (it has none on steps where its grad was undefined).
    pub(super) step: Count,
}

impl Param {
    /// The parameter's gradient when it takes part in this step: it is trainable (has moments)
    /// and its gradient is defined.
    pub(super) fn grad_this_step(&self) -> Option<Tensor> {
        if !self.exp_avg.defined() {
            return None;
        }
        Some(self.tensor.grad()).filter(Tensor::defined)
    }
}

/// Decoupled-weight-decay Adam (`torch.optim.AdamW`) over named parameters in two groups, each
/// parameter with its own learning-rate multiplier.
pub struct AdamW {
    pub(super) params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    fused: bool,
    /// Completed `step` calls, saved as `step` (on the device, in f64, for the fused kernel).
    pub(super) steps: Count,
}

impl AdamW {
    /// An optimizer over `params` (e.g. `vs.variables()` collected into a Vec) with betas, eps,
    /// weight decay and kernel (`fused`) from `cfg`. Parameters for which `no_decay(name)` is true
    /// get weight decay 0 (biases, norm gains, `logit_scale`, embeddings). Parameters are ordered
    /// by name so the update order, and hence the result, does not depend on the caller's map
    /// order. Step counts live on the first parameter's device.
    pub fn new(
        mut params: Vec<(String, Tensor)>,
        cfg: &OptimConfig,
        no_decay: impl Fn(&str) -> bool,
    ) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let device = params.first().map_or(Device::Cpu, |(_, t)| t.device());
        let params = params
            .into_iter()
            .map(|(name, tensor)| {
                let (exp_avg, exp_avg_sq) = if tensor.requires_grad() {
                    let z = || Tensor::zeros(tensor.size(), (Kind::Float, tensor.device()));
                    (z(), z())
                } else {
                    (Tensor::new(), Tensor::new())
                };
                Param {
                    decay: !no_decay(&name),
                    lr_scale: 1.0,
                    step: Count::zero(cfg.fused, Kind::Float, tensor.device()),
                    name,
                    tensor,
                    exp_avg,
                    exp_avg_sq,
                }
            })
            .collect();
        Self {
            params,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            fused: cfg.fused,
            steps: Count::zero(cfg.fused, Kind::Double, device),
        }
    }

    /// Completed optimizer steps (skipped ones not counted). With the fused kernel this reads a
    /// device counter back, so it waits for the device: for checkpoints and tests, not per step.
    pub fn steps(&self) -> u64 {
        self.steps.get()
    }

    /// Whether updates run in ATen's fused kernel (`optim.fused`) rather than per tensor.
    pub fn is_fused(&self) -> bool {
        self.fused
    }

    /// Sets every parameter's learning-rate multiplier to `scale(name)` (all 1.0 until called).
    /// The multipliers are configuration, not state: they are not saved with the moments.
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) {
        for p in &mut self.params {
            p.lr_scale = scale(&p.name);
        }
    }

    /// Names of the parameters in the weight-decay group.
    pub fn decay_names(&self) -> Vec<&str> {
        self.names(true)
    }

    /// Names of the parameters in the no-decay group.
    pub fn no_decay_names(&self) -> Vec<&str> {
        self.names(false)
    }

    fn names(&self, decay: bool) -> Vec<&str> {
        self.params
            .iter()
            .filter(|p| p.decay == decay)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// One AdamW update at learning rate `lr` for every parameter with a defined gradient; the
    /// others (frozen, or unused this step) are left alone, moments and step count included.
    ///
    /// `found_inf` is the skip flag of mixed-precision training: an fp32 tensor of one element
    /// on the parameters' device, 1.0 when this step's gradients are not finite, else 0.0. A
    /// step flagged 1.0 changes nothing at all (parameters, moments, per-parameter and completed
    /// step counts). The fused kernel applies the flag on the device and reads nothing back, so
    /// the host can run ahead; the per-tensor kernel reads the flag on the host.
    ///
    /// # Panics
    /// If libtorch rejects the fused call (tensors on different devices, a gradient whose shape
    /// differs from its parameter's): a programming error, as for a failing tch op.
    pub fn step(&mut self, lr: f64, found_inf: Option<&Tensor>) {
        let hyper = AdamWHyper {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
            eps: self.eps,
        };
        if self.fused {
            tch::no_grad(|| fused::step(&self.params, hyper, found_inf));
        } else if found_inf.is_some_and(|f| f.double_value(&[]) != 0.0) {
            return;
        } else {
            tch::no_grad(|| self.step_per_tensor(hyper));
        }
        self.steps.advance(found_inf);
    }

    /// The reference kernel: the op order below mirrors torch's `_single_tensor_adam` so the
    /// arithmetic (and float rounding) matches it.
    fn step_per_tensor(&mut self, hyper: AdamWHyper) {
        let AdamWHyper {
            beta1: b1,
            beta2: b2,
            eps,
            ..
        } = hyper;
        for p in &mut self.params {
            let Some(grad) = p.grad_this_step() else {
                continue;
            };
            let grad = if grad.kind() == Kind::Float {
                grad
            } else {
                grad.to_kind(Kind::Float)
            };
            // Non-fp32 parameters are updated in an fp32 copy, then written back.
            let fp32 = p.tensor.kind() == Kind::Float;
            let mut w = if fp32 {
                p.tensor.shallow_clone()
            } else {
                p.tensor.to_kind(Kind::Float)
            };
            let t = p.step.host_increment() as f64;
            let lr = hyper.lr * p.lr_scale;
            if p.decay && hyper.weight_decay != 0.0 {
                // Decoupled decay first, on the pre-update weights, as torch.optim.AdamW.
                let _ = w.g_mul_scalar_(1.0 - lr * hyper.weight_decay);
            }
            let _ = p.exp_avg.lerp_(&grad, 1.0 - b1);
            let _ = p.exp_avg_sq.g_mul_scalar_(b2);
            // addcmul_(g, g, value=1−β2) computes (value·g)·g; tch's addcmul_ has no value
            // argument, so the scaled factor is passed as the first tensor.
            let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - b2)), &grad);
            let bias1 = 1.0 - b1.powf(t);
            let bias2_sqrt = (1.0 - b2.powf(t)).sqrt();
            let step_size = lr / bias1;
            let mut denom = p.exp_avg_sq.sqrt() / bias2_sqrt;
            let _ = denom.g_add_scalar_(eps);
            // addcdiv_(m, d, value=−s): ATen's CPU kernel computes (value·m)/d (checked bit for
            // bit against torch), so the scaled numerator goes in as the tensor.
            let _ = w.addcdiv_(&(&p.exp_avg * -step_size), &denom);
            if !fp32 {
                p.tensor.shallow_clone().copy_(&w);
            }
        }
    }

    /// Drops every parameter's gradient (torch's `zero_grad(set_to_none=True)`), so parameters
    /// that receive none next step are skipped rather than updated with a stale zero.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            shim::clear_grad(&p.tensor);
        }
    }

    /// The global L2 norm of all defined gradients before clipping, as an fp32 0-dim tensor on
    /// the parameters' device (0 when no gradient is defined). When `max_norm > 0` every gradient
    /// is then multiplied by `min(max_norm / (norm + 1e-6), 1)`, the foreach path of
    /// `torch.nn.utils.clip_grad_norm_`: gradients within the bound are unchanged, larger ones
    /// are scaled to it. Nothing is read on the host, so the step does not wait for the device.
    /// The per-tensor norms are combined in f64, so the sum of squares cannot overflow fp32.
    /// A non-finite norm makes every gradient non-finite (the step must then be skipped, e.g.
    /// with `found_inf`), where the former host-side clip left them as they were.
    ///
    /// # Panics
    /// If libtorch rejects the multi-tensor calls (gradients on several devices).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .filter_map(Param::grad_this_step)
            .collect();
        if grads.is_empty() {
            return Tensor::zeros([], (Kind::Float, self.device()));
        }
        tch::no_grad(|| {
            let norms = shim::foreach_norm(&grads)
                .unwrap_or_else(|e| panic!("gradient norms (_foreach_norm): {e}"));
            let total = Tensor::stack(&norms, 0).to_kind(Kind::Double).norm();
            if max_norm > 0.0 {
                let coef = (max_norm / (&total + 1e-6))
                    .clamp_max(1.0)
                    .to_kind(Kind::Float);
                shim::foreach_mul_(&grads, &coef)
                    .unwrap_or_else(|e| panic!("gradient clipping (_foreach_mul_): {e}"));
            }
            total.to_kind(Kind::Float)
        })
    }

    /// The device the parameters (and step counts) live on; the CPU when there are none.
    fn device(&self) -> Device {
        self.params
            .first()
            .map_or(Device::Cpu, |p| p.tensor.device())
    }
}

//! AdamW with explicit, saveable state.
//!
//! Written over plain tch tensor ops rather than `nn::AdamW` because tch cannot save or load Adam
//! moments (its C API has no call for them), and rather than `at::_fused_adamw_` through the shim
//! because the per-op path keeps the step count as an exact integer on the host (no float
//! `state_steps` tensor and its increment-before-call pitfall), works for any device/dtype mix
//! without a CUDA-only fast path, and reproduces `torch.optim.AdamW`'s single-tensor arithmetic
//! op for op. For CLIP-sized models the extra kernel launches are small next to forward/backward.
use std::collections::{BTreeMap, BTreeSet};

use tch::{Kind, Tensor};

use crate::config::OptimConfig;
use crate::shim;

/// Errors from restoring optimizer state.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// The state does not fit this optimizer's parameters.
    #[error(
        "optimizer state does not match the model: missing [{}], unexpected [{}], mismatched [{}]",
        missing.join(", "), unexpected.join(", "), mismatched.join(", ")
    )]
    StateMismatch {
        /// Names this optimizer needs that the state lacks.
        missing: Vec<String>,
        /// Names in the state that belong to no parameter here.
        unexpected: Vec<String>,
        /// Names present on both sides with an incompatible shape or value (`name: why`).
        mismatched: Vec<String>,
    },
    /// A libtorch call failed while copying state.
    #[error("libtorch error while loading optimizer state: {0}")]
    Torch(#[from] tch::TchError),
}

/// One parameter and its Adam state.
struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    /// Multiplier of the step's learning rate for this parameter (fine-tuning's per-tower and
    /// layer-wise rates); weight decay uses the scaled rate too, as a torch param group would.
    lr_scale: f64,
    /// Moments are kept in fp32 whatever the parameter dtype. Only parameters that require grad
    /// get them (frozen towers cost no optimizer memory); allocating at construction instead of
    /// on the first step gives the state a fixed set of names to save and check.
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Steps this parameter actually took (it has none on steps where its grad was undefined).
    step: u64,
}

/// Decoupled-weight-decay Adam (`torch.optim.AdamW`) over named parameters in two groups, each
/// parameter with its own learning-rate multiplier.
pub struct AdamW {
    params: Vec<Param>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Completed `step` calls, saved as `step`.
    steps: u64,
}

/// Checks a saved step count: present, an integer scalar, not negative.
fn check_count(
    name: &str,
    t: Option<&Tensor>,
    missing: &mut Vec<String>,
    mismatched: &mut Vec<String>,
) {
    match t {
        None => missing.push(name.to_string()),
        Some(t) if t.numel() != 1 || t.is_floating_point() => {
            mismatched.push(format!("{name}: expected an integer scalar"))
        }
        Some(t) if t.int64_value(&[]) < 0 => mismatched.push(format!("{name}: negative")),
        Some(_) => {}
    }
}

fn state_name(prefix: &str, param: &str) -> String {
    format!("{prefix}.{param}")
}

impl AdamW {
    /// An optimizer over `params` (e.g. `vs.variables()` collected into a Vec) with betas, eps and
    /// weight decay from `cfg`. Parameters for which `no_decay(name)` is true get weight decay 0
    /// (biases, norm gains, `logit_scale`, embeddings). Parameters are ordered by name so the
    /// update order, and hence the result, does not depend on the caller's map order.
    pub fn new(
        mut params: Vec<(String, Tensor)>,
        cfg: &OptimConfig,
        no_decay: impl Fn(&str) -> bool,
    ) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
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
                    name,
                    tensor,
                    exp_avg,
                    exp_avg_sq,
                    step: 0,
                }
            })
            .collect();
        Self {
            params,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            steps: 0,
        }
    }

    /// Completed optimizer steps.
    pub fn steps(&self) -> u64 {
        self.steps
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
        self.params
            .iter()
            .filter(|p| p.decay)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Names of the parameters in the no-decay group.
    pub fn no_decay_names(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|p| !p.decay)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// One AdamW update at learning rate `lr` for every parameter with a defined gradient;
    /// the others (frozen, or unused this step) are left alone, moments and step count included.
    pub fn step(&mut self, lr: f64) {
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() || !p.exp_avg.defined() {
                    continue;
                }
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
                p.step += 1;
                let lr = lr * p.lr_scale;
                if p.decay && self.weight_decay != 0.0 {
                    // Decoupled decay first, on the pre-update weights, as torch.optim.AdamW.
                    let _ = w.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                // The op order below mirrors torch's `_single_tensor_adam` so the arithmetic (and
                // float rounding) matches it.
                let _ = p.exp_avg.lerp_(&grad, 1.0 - b1);
                let _ = p.exp_avg_sq.g_mul_scalar_(b2);
                // addcmul_(g, g, value=1−β2) computes (value·g)·g; tch's addcmul_ has no value
                // argument, so the scaled factor is passed as the first tensor.
                let _ = p.exp_avg_sq.addcmul_(&(&grad * (1.0 - b2)), &grad);
                let t = p.step as f64;
                let bias1 = 1.0 - b1.powf(t);
                let bias2_sqrt = (1.0 - b2.powf(t)).sqrt();
                let step_size = lr / bias1;
                let mut denom = p.exp_avg_sq.sqrt() / bias2_sqrt;
                let _ = denom.g_add_scalar_(eps);
                // addcdiv_(m, d, value=−s): ATen's CPU kernel computes (value·m)/d (checked
                // bit for bit against torch), so the scaled numerator goes in as the tensor.
                let _ = w.addcdiv_(&(&p.exp_avg * -step_size), &denom);
                if !fp32 {
                    p.tensor.shallow_clone().copy_(&w);
                }
            }
        });
        self.steps += 1;
    }

    /// Drops every parameter's gradient (torch's `zero_grad(set_to_none=True)`), so parameters
    /// that receive none next step are skipped rather than updated with a stale zero.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            shim::clear_grad(&p.tensor);
        }
    }

    /// The global L2 norm of all defined gradients (before clipping). When `max_norm > 0` and the
    /// norm exceeds it, every gradient is scaled in place by `max_norm / (norm + 1e-6)`, as
    /// `torch.nn.utils.clip_grad_norm_`. Reading the norm synchronises with the device once.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            // Per-tensor norms accumulated in f64 so the sum of squares cannot overflow fp32/bf16.
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.norm().to_kind(Kind::Double))
                .collect();
            Tensor::stack(&norms, 0).norm().double_value(&[])
        });
        if max_norm > 0.0 {
            let coef = max_norm / (total + 1e-6);
            if coef < 1.0 {
                tch::no_grad(|| {
                    for g in &grads {
                        let _ = g.shallow_clone().g_mul_scalar_(coef);
                    }
                });
            }
        }
        total
    }

    /// The optimizer state as named tensors for safetensors: `exp_avg.<param>`,
    /// `exp_avg_sq.<param>`, `step.<param>` (per-parameter step counts, i64) for every trainable
    /// parameter, and `step` (completed optimizer steps, i64). Moments are shallow clones: save
    /// them before the next step.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from(self.steps as i64))];
        for p in self.params.iter().filter(|p| p.exp_avg.defined()) {
            out.push((state_name("exp_avg", &p.name), p.exp_avg.shallow_clone()));
            out.push((
                state_name("exp_avg_sq", &p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
            out.push((state_name("step", &p.name), Tensor::from(p.step as i64)));
        }
        out
    }

    /// Restores state written by [`state_tensors`](Self::state_tensors) (typically read back with
    /// `Tensor::read_safetensors`). Every name must be present with the right shape and no extra
    /// ones may appear; otherwise nothing is changed and the error lists all offending names.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), OptimError> {
        let mut by_name: BTreeMap<String, Tensor> = state.into_iter().collect();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut expected = BTreeSet::new();
        check_count("step", by_name.get("step"), &mut missing, &mut mismatched);
        expected.insert("step".to_string());
        for p in self.params.iter().filter(|p| p.exp_avg.defined()) {
            for prefix in ["exp_avg", "exp_avg_sq"] {
                let name = state_name(prefix, &p.name);
                match by_name.get(&name) {
                    None => missing.push(name.clone()),
                    Some(t) if t.size() != p.exp_avg.size() => mismatched.push(format!(
                        "{name}: shape {:?}, expected {:?}",
                        t.size(),
                        p.exp_avg.size()
                    )),
                    Some(_) => {}
                }
                expected.insert(name);
            }
            let name = state_name("step", &p.name);
            check_count(&name, by_name.get(&name), &mut missing, &mut mismatched);
            expected.insert(name);
        }
        let unexpected: Vec<String> = by_name
            .keys()
            .filter(|k| !expected.contains(*k))
            .cloned()
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
            return Err(OptimError::StateMismatch {
                missing,
                unexpected,
                mismatched,
            });
        }
        // Validated: now copy. `copy_` converts dtype and device, so a CPU file restores onto a
        // GPU optimizer.
        let step_of = |t: &Tensor| t.int64_value(&[]) as u64;
        self.steps = step_of(&by_name["step"]);
        tch::no_grad(|| -> Result<(), OptimError> {
            for p in self.params.iter_mut().filter(|p| p.exp_avg.defined()) {
                let m = by_name
                    .remove(&state_name("exp_avg", &p.name))
                    .expect("checked above");
                let v = by_name
                    .remove(&state_name("exp_avg_sq", &p.name))
                    .expect("checked above");
                p.exp_avg.f_copy_(&m)?;
                p.exp_avg_sq.f_copy_(&v)?;
                p.step = step_of(&by_name[&state_name("step", &p.name)]);
            }
            Ok(())
        })
    }
}

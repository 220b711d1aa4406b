//! The optimizer's saved state (`optimizer.safetensors`) and the step counts it holds.
//!
//! The format is the same for both kernels: `step` (completed optimizer steps) and, for every
//! trainable parameter, `exp_avg.<p>`, `exp_avg_sq.<p>` (fp32) and `step.<p>` (its own steps),
//! the counts as i64 scalars. The fused kernel's float device counts are converted when saving
//! and loading, so a checkpoint of either kernel resumes in the other.
use std::collections::{BTreeMap, BTreeSet};

use tch::{Device, Kind, Tensor};

use super::AdamW;

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

/// A step count. The per-tensor kernel keeps it on the host, where it computes the bias
/// correction. The fused kernel keeps it on the parameters' device as a float scalar:
/// `_fused_adamw_` takes per-parameter counts as fp32 `state_steps`, and the completed-step
/// count advances there by `1 − found_inf`, so a step never waits to read a flag.
pub(super) enum Count {
    Host(u64),
    Device(Tensor),
}

impl Count {
    /// A zero count where the kernel (`fused` or not) keeps it; `kind` is the device count's
    /// float type (fp32 per parameter as torch, f64 for the completed steps: exact to 2^53).
    pub(super) fn zero(fused: bool, kind: Kind, device: Device) -> Self {
        if fused {
            Count::Device(Tensor::zeros([], (kind, device)))
        } else {
            Count::Host(0)
        }
    }

    /// The count. A device count is read back, which waits for the device.
    pub(super) fn get(&self) -> u64 {
        match self {
            Count::Host(n) => *n,
            Count::Device(t) => t.double_value(&[]) as u64,
        }
    }

    pub(super) fn set(&mut self, n: u64) {
        match self {
            Count::Host(c) => *c = n,
            Count::Device(t) => {
                let _ = tch::no_grad(|| t.fill_(n as f64));
            }
        }
    }

    /// One more step, less one if `found_inf` (one element, 0 or 1) flags it skipped; on the
    /// device for a device count, which is never read here.
    pub(super) fn advance(&mut self, found_inf: Option<&Tensor>) {
        match self {
            Count::Host(n) => *n += 1,
            Count::Device(t) => tch::no_grad(|| {
                let _ = t.g_add_scalar_(1.0);
                if let Some(f) = found_inf {
                    let _ = t.g_sub_(&f.reshape([]));
                }
            }),
        }
    }

    /// Adds one and returns the new count: the per-tensor kernel's per-parameter step.
    pub(super) fn host_increment(&mut self) -> u64 {
        match self {
            Count::Host(n) => {
                *n += 1;
                *n
            }
            Count::Device(_) => unreachable!("the per-tensor kernel keeps its counts on the host"),
        }
    }

    /// The fp32 device scalar the fused kernel updates in place.
    pub(super) fn device_tensor(&self) -> &Tensor {
        match self {
            Count::Device(t) => t,
            Count::Host(_) => unreachable!("the fused kernel keeps its counts on the device"),
        }
    }
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
    /// The optimizer state as named tensors for safetensors: `exp_avg.<param>`,
    /// `exp_avg_sq.<param>`, `step.<param>` (per-parameter step counts, i64) for every trainable
    /// parameter, and `step` (completed optimizer steps, i64). Moments are shallow clones: save
    /// them before the next step. The fused kernel's counts are read back from the device here.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let count = |c: &Count| Tensor::from(c.get() as i64);
        let mut out = vec![("step".to_string(), count(&self.steps))];
        for p in self.params.iter().filter(|p| p.exp_avg.defined()) {
            out.push((state_name("exp_avg", &p.name), p.exp_avg.shallow_clone()));
            out.push((
                state_name("exp_avg_sq", &p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
            out.push((state_name("step", &p.name), count(&p.step)));
        }
        out
    }

    /// Restores state written by [`state_tensors`](Self::state_tensors) (typically read back with
    /// `Tensor::read_safetensors`), by either kernel. Every name must be present with the right
    /// shape and no extra ones may appear; otherwise nothing is changed and the error lists all
    /// offending names.
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
        self.steps.set(step_of(&by_name["step"]));
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
                p.step.set(step_of(&by_name[&state_name("step", &p.name)]));
            }
            Ok(())
        })
    }
}

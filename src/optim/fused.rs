//! The fused kernel of [`AdamW`](super::AdamW): ATen's `_fused_adamw_`, one call per group of
//! parameters sharing device, weight decay and learning-rate multiplier, as
//! `torch.optim.AdamW(fused=True)` makes one per param group and device.
use tch::{Device, Kind, Tensor};

use super::adamw::Param;
use crate::shim::{self, AdamWHyper, AdamWLists};

/// The parameters of one `_fused_adamw_` call.
struct Group {
    device: Device,
    decay: bool,
    lr_scale: f64,
    /// Index into the optimizer's parameters, the fp32 tensor the kernel updates (the parameter
    /// itself, or an fp32 copy written back afterwards), and its fp32 gradient.
    members: Vec<(usize, Tensor, Tensor)>,
}

/// One AdamW step of every parameter with a gradient, skipped on the device when `found_inf`
/// holds 1.0. Reads nothing on the host.
pub(super) fn step(params: &[Param], hyper: AdamWHyper, found_inf: Option<&Tensor>) {
    let groups = group(params);
    for g in &groups {
        let at = |f: fn(&Param) -> &Tensor| -> Vec<&Tensor> {
            g.members.iter().map(|(i, _, _)| f(&params[*i])).collect()
        };
        let weights: Vec<&Tensor> = g.members.iter().map(|(_, w, _)| w).collect();
        let grads: Vec<&Tensor> = g.members.iter().map(|(_, _, grad)| grad).collect();
        let (exp_avgs, exp_avg_sqs, steps) = (
            at(|p| &p.exp_avg),
            at(|p| &p.exp_avg_sq),
            at(|p| p.step.device_tensor()),
        );
        let lists = AdamWLists {
            params: &weights,
            grads: &grads,
            exp_avgs: &exp_avgs,
            exp_avg_sqs: &exp_avg_sqs,
            steps: &steps,
        };
        let group_hyper = AdamWHyper {
            lr: hyper.lr * g.lr_scale,
            weight_decay: if g.decay { hyper.weight_decay } else { 0.0 },
            ..hyper
        };
        shim::fused_adamw_step(&lists, group_hyper, found_inf).unwrap_or_else(|e| {
            panic!(
                "fused AdamW step on {:?} (parameters {}...): {e}",
                g.device, params[g.members[0].0].name
            )
        });
        for (i, w, _) in &g.members {
            let p = &params[*i].tensor;
            if p.kind() != Kind::Float {
                p.shallow_clone().copy_(w);
            }
        }
    }
}

/// Sorts the parameters that take part in this step into groups, in parameter order.
fn group(params: &[Param]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let Some(grad) = p.grad_this_step() else {
            continue;
        };
        let (device, decay, lr_scale) = (p.tensor.device(), p.decay, p.lr_scale);
        let at = match groups
            .iter()
            .position(|g| g.device == device && g.decay == decay && g.lr_scale == lr_scale)
        {
            Some(at) => at,
            None => {
                groups.push(Group {
                    device,
                    decay,
                    lr_scale,
                    members: Vec::new(),
                });
                groups.len() - 1
            }
        };
        // The kernel wants parameter, gradient and moments in one dtype; moments are fp32, so a
        // parameter of another dtype is updated in an fp32 copy, as the per-tensor kernel does.
        let fp32 = |t: Tensor| {
            if t.kind() == Kind::Float {
                t
            } else {
                t.to_kind(Kind::Float)
            }
        };
        groups[at]
            .members
            .push((i, fp32(p.tensor.shallow_clone()), fp32(grad)));
    }
    groups
}

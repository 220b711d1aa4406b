//! One optimizer step's forward and backward across ranks: the contrastive loss over the global
//! batch (features all-gathered), composed with micro-batch feature caching, and gradients
//! averaged over ranks in bucketed flat buffers.
//!
//! ## Why the gradients equal a single process's on the whole batch
//! Rank r holds the local slice f_r (B pairs) of the global features F (N = W·B pairs) and
//! computes a loss L_r on the gathered F: the global loss L (default), or with `local_loss` its
//! own B rows against all N columns, where Σ_r L_r = W·L. The job minimises J = (1/W)·Σ_r L_r,
//! which is L in both cases. Gradients are averaged over ranks (all-reduce AVG), so
//! - `logit_scale` (and the SigLIP bias) — each rank has ∂L_r/∂s — ends with (1/W)·Σ_r ∂L_r/∂s =
//!   ∂J/∂s;
//! - the encoders only see gradient through the rank's own f_r, so what rank r back-propagates
//!   into them must be W·∂J/∂f_r = Σ_r' ∂L_r'/∂f_r for the average to come out as ∂J/∂θ.
//!   With `gather_with_grad` that sum is formed exactly by an all-reduce (SUM) of every rank's
//!   ∂L_r'/∂F (what `torch.distributed.nn.all_gather`'s backward does). With the global loss and
//!   no `gather_with_grad` every rank's ∂L/∂F is the same, so the sum is W times the local one:
//!   exact, without the extra all-reduce. Only `local_loss` without `gather_with_grad` cannot
//!   form it: like OpenCLIP, the other ranks' terms are dropped (an approximation).
//!
//! OpenCLIP's default (DDP averaging, no factor) leaves the encoder gradients at 1/W of the
//! global-batch gradient while `logit_scale` gets the full one; the W here makes a W-rank run
//! equal to one process on the whole batch (tested in `tests/dist.rs`).
use super::{DistError, ProcessGroup, ReduceOp};
use crate::config::Precision;
use crate::loss::ClipLoss;
use crate::model::ClipModel;
use crate::precision::Autocast;
use tch::{Device, Kind, Tensor};

/// How the loss spans ranks (`[dist]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossSpan {
    /// Back-propagate through the other ranks' features too (all-reduce of feature gradients).
    pub gather_with_grad: bool,
    /// Each rank's loss covers its own rows against the global batch only.
    pub local_loss: bool,
}

/// The forward/backward of one step on rank `group.rank()`, on its local `images`/`tokens`
/// (B pairs, the same B on every rank); returns the loss of the global batch (the mean of the
/// ranks' losses with `local_loss`) and leaves the rank-averaged gradients in the parameters.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &ClipModel,
    loss_fn: &ClipLoss,
    images: &Tensor,
    tokens: &Tensor,
    micro_batch_size: usize,
    precision: Precision,
    device: Device,
    group: &ProcessGroup,
    span: LossSpan,
    grads: &GradSync,
) -> Result<f64, StepError> {
    let images = images.to_device(device);
    let tokens = tokens.to_device(device);
    let b = images.size()[0];
    let micro = match micro_batch_size as i64 {
        0 => b,
        m => m.min(b),
    };
    let (img_chunks, tok_chunks) = (images.split(micro, 0), tokens.split(micro, 0));
    let encode = |i: &Tensor, t: &Tensor| -> Result<(Tensor, Tensor), StepError> {
        let _ac = Autocast::enter(device, precision)?;
        Ok((
            model.encode_image(i).to_kind(Kind::Float),
            model.encode_text(t).to_kind(Kind::Float),
        ))
    };
    // 1. Local features: with their graph when the local batch is one micro-batch (encoded
    //    once), else without (GradCache: each micro-batch is re-encoded in step 4).
    let single = img_chunks.len() == 1;
    let mut kept = None;
    let (local_i, local_t) = if single {
        let (fi, ft) = encode(&images, &tokens)?;
        let detached = (fi.detach(), ft.detach());
        kept = Some((fi, ft));
        detached
    } else {
        let mut parts = (Vec::new(), Vec::new());
        for (i, t) in img_chunks.iter().zip(&tok_chunks) {
            let (fi, ft) = tch::no_grad(|| encode(i, t))?;
            parts.0.push(fi);
            parts.1.push(ft);
        }
        (Tensor::cat(&parts.0, 0), Tensor::cat(&parts.1, 0))
    };
    // 2. The global batch, in rank order, as leaves whose gradient we read back.
    let all_i = group.all_gather(&local_i)?.set_requires_grad(true);
    let all_t = group.all_gather(&local_t)?.set_requires_grad(true);
    let (w, start) = (group.world_size() as i64, group.rank() as i64 * b);
    let loss = if span.local_loss {
        loss_fn.forward_local(
            &all_i,
            &all_t,
            start,
            b,
            model.logit_scale(),
            model.logit_bias(),
        )
    } else {
        loss_fn.forward(&all_i, &all_t, model.logit_scale(), model.logit_bias())
    };
    loss.backward();
    // 3. What this rank back-propagates into its encoders: Σ_r' ∂L_r'/∂f_r (module docs).
    let (gi, gt) = (all_i.grad(), all_t.grad());
    let (gi, gt) = if span.gather_with_grad {
        let both = Tensor::cat(&[gi.flatten(0, -1), gt.flatten(0, -1)], 0);
        group.all_reduce(&both, ReduceOp::Sum)?;
        let n = gi.numel() as i64;
        (
            both.narrow(0, 0, n).view_as(&gi),
            both.narrow(0, n, n).view_as(&gt),
        )
    } else if span.local_loss {
        (gi, gt)
    } else {
        (gi * w as f64, gt * w as f64)
    };
    let (gi, gt) = (gi.narrow(0, start, b), gt.narrow(0, start, b));
    // 4. Back through the encoders, one micro-batch at a time.
    let surrogate = |fi: &Tensor, ft: &Tensor, s: i64, n: i64| {
        (fi * gi.narrow(0, s, n)).sum(Kind::Float) + (ft * gt.narrow(0, s, n)).sum(Kind::Float)
    };
    if let Some((fi, ft)) = kept {
        surrogate(&fi, &ft, 0, b).backward();
    } else {
        for (j, (i, t)) in img_chunks.iter().zip(&tok_chunks).enumerate() {
            let (fi, ft) = encode(i, t)?;
            surrogate(&fi, &ft, j as i64 * micro, i.size()[0]).backward();
        }
    }
    // 5. Average the gradients; report J.
    grads.average(group)?;
    let value = loss.detach();
    if span.local_loss {
        group.all_reduce(&value, ReduceOp::Avg)?;
    }
    Ok(value.double_value(&[]))
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error(transparent)]
    Autocast(#[from] crate::precision::PrecisionError),
}

/// Averages parameter gradients over ranks in flat buffers of about `bucket_bytes`: one
/// collective per bucket instead of one per tensor (latency dominates for small tensors), every
/// bucket in flight at once so Gloo's worker threads overlap the transfers with each other and
/// with the flattening of the next bucket.
pub struct GradSync {
    params: Vec<Tensor>,
    bucket_bytes: usize,
}

impl GradSync {
    /// `params` in the same order on every rank (sorted by name).
    pub fn new(params: Vec<Tensor>, bucket_bytes: usize) -> Self {
        Self {
            params,
            bucket_bytes: bucket_bytes.max(1),
        }
    }

    /// Replaces each defined gradient with its mean over ranks. Parameters without a gradient
    /// are skipped; every rank runs the same model and loss, so they agree on which those are.
    pub fn average(&self, group: &ProcessGroup) -> Result<(), DistError> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let mut buckets: Vec<Vec<&Tensor>> = Vec::new();
        let mut size = 0usize;
        for g in &grads {
            let bytes = g.numel() * g.kind().elt_size_in_bytes();
            let same_kind = buckets
                .last()
                .and_then(|b| b.first())
                .is_some_and(|f| f.kind() == g.kind() && f.device() == g.device());
            if buckets.is_empty() || !same_kind || size + bytes > self.bucket_bytes {
                buckets.push(Vec::new());
                size = 0;
            }
            buckets.last_mut().expect("pushed above").push(g);
            size += bytes;
        }
        tch::no_grad(|| {
            let mut in_flight = Vec::with_capacity(buckets.len());
            for bucket in &buckets {
                let flat: Vec<Tensor> = bucket.iter().map(|g| g.flatten(0, -1)).collect();
                let flat = Tensor::cat(&flat, 0);
                let work = group.all_reduce_start(&flat, ReduceOp::Avg)?;
                in_flight.push((flat, work));
            }
            for (bucket, (flat, work)) in buckets.iter().zip(in_flight) {
                group.wait(work)?;
                let mut offset = 0i64;
                for g in bucket {
                    let n = g.numel() as i64;
                    g.shallow_clone()
                        .copy_(&flat.narrow(0, offset, n).view_as(g));
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

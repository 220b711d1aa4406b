//! One optimizer step's forward and backward, for a job of any size: the contrastive loss over
//! the global batch (features all-gathered), composed with micro-batch feature caching
//! (GradCache), and gradients averaged over ranks. A single process is the job of one rank,
//! whose collectives are the identity (as OpenCLIP's `ClipLoss` with `world_size == 1`).
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
//! equal to one process on the whole batch (tested in `tests/suite/dist.rs`).
//!
//! ## Feature caching
//! With `micro_batch_size < B` every micro-batch is embedded without autograd, the loss and its
//! gradient w.r.t. the embeddings are taken over the whole batch, then each micro-batch is
//! re-embedded with autograd and back-propagates its slice of that gradient. `logit_scale` (and
//! the SigLIP bias) get their gradient once, from the full-batch loss.
use crate::config::{Config, Precision};
use crate::data::pixels::PixelNorm;
use crate::dist::{Dist, DistError, GradSync, ReduceOp};
use crate::loss::ClipLoss;
use crate::model::{ClipModel, PatchDraw};
use crate::precision::{Autocast, DynamicLossScaler, PrecisionError};
use tch::{Device, Kind, Tensor};

/// How the loss spans ranks (`[dist]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossSpan {
    /// Back-propagate through the other ranks' features too (all-reduce of feature gradients).
    pub gather_with_grad: bool,
    /// Each rank's loss covers its own rows against the global batch only.
    pub local_loss: bool,
}

/// One step's forward and backward as the config describes it: precision, micro-batching,
/// how the loss spans ranks, and the gradients to average. The loss itself is the caller's
/// (the trainer's [`ClipLoss`], which the update also clamps).
pub struct ForwardBackward {
    /// Pairs encoded at once; 0 = the whole local batch.
    pub micro_batch_size: usize,
    pub precision: Precision,
    pub device: Device,
    pub span: LossSpan,
    grads: GradSync,
    /// `data.image_mean`/`image_std`, applied to the u8 batches on the device.
    pixels: PixelNorm,
    /// `run.seed`, which keys the patch-dropout draw with the step and the sample.
    seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error(transparent)]
    Autocast(#[from] PrecisionError),
}

/// Features of a local batch, and (when it was encoded in one piece) the graph-carrying tensors
/// the backward pass can reuse instead of encoding again.
struct Local {
    image: Tensor,
    text: Tensor,
    kept: Option<(Tensor, Tensor)>,
}

impl ForwardBackward {
    /// The forward/backward `cfg` describes (the rank's effective config) on `device`,
    /// averaging the gradients of `params` over ranks (in the same order on every rank).
    pub fn new(cfg: &Config, device: Device, params: Vec<Tensor>) -> Self {
        Self {
            micro_batch_size: cfg.optim.micro_batch_size,
            precision: cfg.run.precision,
            device,
            span: LossSpan {
                gather_with_grad: cfg.dist.gather_with_grad,
                local_loss: cfg.dist.local_loss,
            },
            grads: GradSync::new(params, cfg.dist.bucket_mb << 20),
            pixels: PixelNorm::new(cfg.data.image_mean, cfg.data.image_std, device),
            seed: cfg.run.seed,
        }
    }

    /// The forward/backward of one step on this rank's `images`/`tokens` (B pairs, the same B on
    /// every rank); returns the loss of the global batch (the mean of the ranks' losses with
    /// `local_loss`), a scalar left on the device so the caller need not wait for it, and leaves
    /// the rank-averaged gradients in the parameters — multiplied by the loss scale when a
    /// `scaler` is given (fp16), for the caller to unscale. `step` (the optimizer step being
    /// taken, 1-based) keys the patch-dropout draw. `classes` are the pairs' class labels when
    /// the data is class-labelled (the loss may mask same-class pairs; see
    /// [`ClipLoss::forward_classes`]).
    pub fn run(
        &self,
        model: &ClipModel,
        loss: &ClipLoss,
        (images, tokens, classes): (&Tensor, &Tensor, Option<&Tensor>),
        dist: &Dist,
        scaler: Option<&DynamicLossScaler>,
        step: u64,
    ) -> Result<Tensor, StepError> {
        // u8 pixels, normalised here on the device. Batches from `DeviceBatches` are there
        // already (the copies are then no-ops).
        let images = self.pixels.apply(&images.to_device(self.device));
        let tokens = tokens.to_device(self.device);
        let b = images.size()[0];
        let micro = match self.micro_batch_size as i64 {
            0 => b,
            m => m.min(b),
        };
        let chunks = (images.split(micro, 0), tokens.split(micro, 0));
        let start = dist.rank as i64 * b;
        // Micro-batch j's images are samples start + j·micro.. of the global batch.
        let draw = |j: usize| PatchDraw {
            seed: self.seed,
            step,
            first_sample: (start + j as i64 * micro) as u64,
        };
        // 1. Local features, as leaves of the loss graph.
        let local = self.encode_local(model, &chunks.0, &chunks.1, draw)?;
        // 2. The global batch, in rank order, as leaves whose gradient we read back.
        let all_i = dist.all_gather(&local.image)?.set_requires_grad(true);
        let all_t = dist.all_gather(&local.text)?.set_requires_grad(true);
        let n = if self.span.local_loss {
            b
        } else {
            all_i.size()[0]
        };
        let first = if self.span.local_loss { start } else { 0 };
        let all_classes = match classes {
            Some(c) => Some(dist.all_gather(&c.to_device(self.device))?),
            None => None,
        };
        let head = (model.logit_scale(), model.logit_bias());
        let rows = (first, n);
        let loss = loss.forward_classes(&all_i, &all_t, rows, head, all_classes.as_ref());
        // Scaling the loss scales every gradient below it, the feature gradients the encoders
        // get in step 4 included.
        match scaler {
            Some(s) => s.scale_loss(&loss).backward(),
            None => loss.backward(),
        }
        // 3. What this rank back-propagates into its encoders: Σ_r' ∂L_r'/∂f_r (module docs).
        let (gi, gt) = self.encoder_grads(&all_i.grad(), &all_t.grad(), dist)?;
        let (gi, gt) = (gi.narrow(0, start, b), gt.narrow(0, start, b));
        // 4. Back through the encoders, one micro-batch at a time.
        let surrogate = |fi: &Tensor, ft: &Tensor, s: i64, n: i64| {
            (fi * gi.narrow(0, s, n)).sum(Kind::Float) + (ft * gt.narrow(0, s, n)).sum(Kind::Float)
        };
        if let Some((fi, ft)) = local.kept {
            surrogate(&fi, &ft, 0, b).backward();
        } else {
            for (j, (i, t)) in chunks.0.iter().zip(&chunks.1).enumerate() {
                let (fi, ft) = self.encode(model, i, t, draw(j))?;
                surrogate(&fi, &ft, j as i64 * micro, i.size()[0]).backward();
            }
        }
        // 5. Average the gradients; report J.
        self.grads.average(dist)?;
        let value = loss.detach();
        if self.span.local_loss {
            dist.all_reduce(&value, ReduceOp::Avg)?;
        }
        Ok(value)
    }

    /// Image and text features of one micro-batch, in fp32 whatever the autocast precision.
    fn encode(
        &self,
        model: &ClipModel,
        images: &Tensor,
        tokens: &Tensor,
        draw: PatchDraw,
    ) -> Result<(Tensor, Tensor), StepError> {
        let _ac = Autocast::enter(self.device, self.precision)?;
        Ok((
            model.encode_image_train(images, draw).to_kind(Kind::Float),
            model.encode_text(tokens).to_kind(Kind::Float),
        ))
    }

    /// The local batch's features, detached: encoded once with their graph when the batch is
    /// one micro-batch (kept for the backward pass), else per micro-batch without one (each is
    /// encoded again, with its graph, in the backward pass).
    fn encode_local(
        &self,
        model: &ClipModel,
        images: &[Tensor],
        tokens: &[Tensor],
        draw: impl Fn(usize) -> PatchDraw,
    ) -> Result<Local, StepError> {
        if let ([i], [t]) = (images, tokens) {
            let (fi, ft) = self.encode(model, i, t, draw(0))?;
            return Ok(Local {
                image: fi.detach(),
                text: ft.detach(),
                kept: Some((fi, ft)),
            });
        }
        let mut parts = (Vec::new(), Vec::new());
        for (j, (i, t)) in images.iter().zip(tokens).enumerate() {
            let (fi, ft) = tch::no_grad(|| self.encode(model, i, t, draw(j)))?;
            parts.0.push(fi);
            parts.1.push(ft);
        }
        Ok(Local {
            image: Tensor::cat(&parts.0, 0),
            text: Tensor::cat(&parts.1, 0),
            kept: None,
        })
    }

    /// From this rank's ∂L_r/∂F (gathered features), the gradient the rank's encoders need:
    /// Σ_r' ∂L_r'/∂F (module docs). One process: its own gradient.
    fn encoder_grads(
        &self,
        gi: &Tensor,
        gt: &Tensor,
        dist: &Dist,
    ) -> Result<(Tensor, Tensor), StepError> {
        let w = dist.world_size as f64;
        if self.span.gather_with_grad {
            let both = Tensor::cat(&[gi.flatten(0, -1), gt.flatten(0, -1)], 0);
            dist.all_reduce(&both, ReduceOp::Sum)?;
            let n = gi.numel() as i64;
            Ok((
                both.narrow(0, 0, n).view_as(gi),
                both.narrow(0, n, n).view_as(gt),
            ))
        } else if self.span.local_loss || dist.world_size == 1 {
            Ok((gi.shallow_clone(), gt.shallow_clone()))
        } else {
            Ok((gi * w, gt * w))
        }
    }
}

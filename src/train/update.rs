//! The update phase of a step, after forward/backward: unscale (fp16), clip, decide on the
//! device whether the step is skipped, apply AdamW gated by that decision, clamp the
//! temperature, adjust the loss scale and count a skipped step. Nothing here reads the device:
//! the next step can be queued while the GPU still runs this one. [`Updater::settle`] reads the
//! counters when the loop needs them (logging, checkpoints, the last step).
use super::TrainError;
use super::bad_steps::{BadSteps, BadStepsRead};
use crate::checkpoint::TrainState;
use crate::config::{Config, Precision};
use crate::loss::ClipLoss;
use crate::model::ClipModel;
use crate::optim::AdamW;
use crate::precision::DynamicLossScaler;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Applies the gradients of a step to the model.
pub(super) struct Updater {
    pub opt: AdamW,
    /// Trainable parameters, whose gradients are unscaled.
    params: Vec<Tensor>,
    /// fp16's dynamic loss scaler; `None` for fp32 and bf16, which need none.
    scaler: Option<DynamicLossScaler>,
    bad: BadSteps,
    grad_clip_norm: f64,
    max_bad_steps: u32,
    run_dir: PathBuf,
}

/// A step's outcome, on the device: read it only when it is logged.
pub(super) struct Applied {
    pub loss: Tensor,
    pub grad_norm: Tensor,
    /// fp32 `[1]`: 1 when the step was skipped.
    pub skipped: Tensor,
}

impl Updater {
    /// The update for a run at `state` (fresh or restored), with `opt` already restored and
    /// `params` the model's variables.
    pub fn new(
        cfg: &Config,
        device: Device,
        opt: AdamW,
        params: &[Tensor],
        state: &TrainState,
    ) -> Result<Self, TrainError> {
        let fp16 = cfg.run.precision == Precision::Fp16;
        let scaler = match fp16 {
            true => {
                let mut s = DynamicLossScaler::new(
                    device,
                    cfg.run.loss_scale,
                    cfg.run.loss_scale_growth_interval,
                );
                if let Some(saved) = state.loss_scale {
                    s.restore(saved)?;
                }
                Some(s)
            }
            false => None,
        };
        Ok(Self {
            opt,
            params: params
                .iter()
                .filter(|p| p.requires_grad())
                .map(Tensor::shallow_clone)
                .collect(),
            scaler,
            bad: BadSteps::new(device, state.bad_steps_in_a_row, fp16),
            grad_clip_norm: cfg.optim.grad_clip_norm,
            max_bad_steps: cfg.optim.max_bad_steps,
            run_dir: cfg.run.output_dir.join(&cfg.run.name),
        })
    }

    pub fn scaler(&self) -> Option<&DynamicLossScaler> {
        self.scaler.as_ref()
    }

    /// Applies step `step`'s gradients at learning rate `lr` unless its loss or gradients are
    /// not finite, in which case parameters and optimizer state stay as they were.
    pub fn apply(
        &mut self,
        step: u64,
        loss: Tensor,
        lr: f64,
        model: &ClipModel,
        clip_loss: &ClipLoss,
    ) -> Result<Applied, TrainError> {
        let overflow = match &self.scaler {
            Some(s) => {
                let found = Tensor::zeros([1], (Kind::Float, loss.device()));
                let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
                s.unscale_(&grads, &found)?;
                Some(found)
            }
            None => None,
        };
        let grad_norm = self.opt.clip_grad_norm(self.grad_clip_norm);
        let skipped = BadSteps::found_inf(&loss, &grad_norm, overflow.as_ref());
        self.opt.step(lr, Some(&skipped));
        clip_loss.clamp_logit_scale(model.logit_scale());
        if let Some(s) = &mut self.scaler {
            s.update(overflow.as_ref().unwrap_or(&skipped));
        }
        self.bad.record(step, &loss, &skipped);
        self.opt.zero_grad();
        Ok(Applied {
            loss,
            grad_norm,
            skipped,
        })
    }

    /// Reads the skipped-step counters (and the loss scale) into `state`, reports skipped steps
    /// since the last read, and ends the run when `optim.max_bad_steps` bad steps came in a row.
    pub fn settle(
        &mut self,
        state: &mut TrainState,
        say: impl Fn(&str),
    ) -> Result<BadStepsRead, TrainError> {
        let read = self.bad.read();
        state.bad_steps_in_a_row = read.in_a_row;
        state.bad_steps_total += read.new_bad;
        state.loss_scale = self.scaler.as_ref().map(DynamicLossScaler::state);
        if read.new_bad > 0 {
            say(&format!(
                "{} step(s) skipped for a non-finite loss or gradient since the last report, the \
                 last at step {}",
                read.new_bad, read.last_bad_step
            ));
        }
        if read.longest_run >= self.max_bad_steps {
            return Err(TrainError::NonFinite {
                in_a_row: read.longest_run,
                max: self.max_bad_steps,
                run_dir: self.run_dir.clone(),
            });
        }
        Ok(read)
    }
}

impl Applied {
    /// Loss, gradient norm (NaN for a skipped step, as before the device-side check), and
    /// whether the step was skipped, in one device read.
    pub fn read(&self) -> (f64, f64, bool) {
        let v = Tensor::cat(
            &[
                self.loss.to_kind(Kind::Double).reshape([1]),
                self.grad_norm.to_kind(Kind::Double).reshape([1]),
                self.skipped.to_kind(Kind::Double).reshape([1]),
            ],
            0,
        )
        .to_device(Device::Cpu);
        let v = Vec::<f64>::try_from(&v).expect("a f64 [3] tensor converts to Vec<f64>");
        let skipped = v[2] != 0.0;
        (v[0], if skipped { f64::NAN } else { v[1] }, skipped)
    }
}

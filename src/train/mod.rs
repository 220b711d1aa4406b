//! The training loop: build everything from the config, then step, evaluate and checkpoint when
//! due, and finish with a summary.
//!
//! [`train`] is the story; a [`Trainer`] holds the run and does one phase per method. On this
//! path parameters change in four places: loading weights when the run is built (`build`,
//! `resume`), `finetune::apply` once at the start (freezing, a `logit_scale` reset),
//! and after each step the optimizer's update ([`AdamW::step`]) followed by the temperature
//! clamp ([`crate::loss::ClipLoss::clamp_logit_scale`]).
//!
//! - [`step`]: one step's forward and backward, the same code for one process and N ranks;
//! - `update`: applying the gradients, skipping a non-finite step on the device (`bad_steps`
//!   counts them), with fp16's loss scaling;
//! - [`meter`]: throughput (samples/s, time waiting for data, evaluation left out);
//! - [`resume`]: which checkpoint to continue, which config changes it allows, restoring it;
//! - [`plan`](RunPlan): the preflight — every start-up decision and refusal, before anything is
//!   allocated (`cliptrain config check` runs exactly this);
//! - `input`: the tokenizer's checks and this rank's data loader;
//! - `build`: the towers, with `model.init_from`'s or a checkpoint's weights;
//! - `clock`: `checkpoint.every_minutes`, rank 0's wall clock asking for a checkpoint.
mod bad_steps;
mod budget;
mod build;
mod clock;
mod error;
pub mod finetune;
mod input;
pub mod meter;
mod plan;
pub mod resume;
pub mod step;
mod stop;
mod update;

pub use error::TrainError;
pub use plan::{Refusals, RunPlan};
pub use resume::{KeyChange, MAY_CHANGE_ON_RESUME};
pub use step::{ForwardBackward, LossSpan, StepError};
pub use stop::StopToken;

use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::Config;
use crate::data::SkipCounts;
use crate::data::device::DeviceBatches;
use crate::data::stream::StreamState;
use crate::dist::{Agreement, Dist};
use crate::eval::{Encoder, EvalResults, Evaluator};
use crate::log::{Metrics, MetricsLog, SampleKeysLog};
use crate::loss::ClipLoss;
use crate::model::{self, ClipModel};
use crate::optim::{AdamW, Ema, LrSchedule};
use crate::text::TextTokenizer;
use clock::CheckpointClock;
use meter::Meter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{Tensor, nn};
use update::{Applied, Updater};

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub enum Resume {
    /// From scratch (refused when the run folder already has checkpoints).
    #[default]
    No,
    /// From the newest complete checkpoint of this run, or from scratch when there is none.
    Auto,
    /// From this checkpoint or run folder.
    From(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub resume: Resume,
    /// End the run after this step with a checkpoint (a preempted job); the schedule still
    /// spans `optim.steps`.
    pub stop_at_step: Option<u64>,
    /// Set by the caller to end the run after the current step, with a checkpoint.
    pub stop: StopToken,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub first_step: u64,
    pub last_step: u64,
    /// (step, loss) at every logged step.
    pub losses: Vec<(u64, f64)>,
    pub samples_per_s: f64,
    pub data_wait_fraction: f64,
    pub checkpoint: Option<PathBuf>,
    /// The run ended early because its [`StopToken`] was set.
    pub interrupted: bool,
    pub skipped_samples: String,
    /// The last evaluation of the `[eval]` sets, at its step.
    pub eval: Option<(u64, EvalResults)>,
}

/// Trains per `cfg` (the effective config, already validated). Started by torchrun or
/// `cliptrain launch` (`WORLD_SIZE` etc. set), this process is one rank of a data-parallel job.
pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let mut trainer = Trainer::build(cfg, opts)?;
    if trainer.agree()?.stop {
        // Asked to stop while starting: no step, so nothing new to checkpoint.
        return Ok(trainer.finish(true));
    }
    if trainer.finished() && trainer.state.step == 0 {
        // `--stop-at-step 0`: the initial weights, as a checkpoint of step 0.
        trainer.checkpoint_if_due(Agreement {
            stop: false,
            checkpoint: true,
        })?;
    }
    while !trainer.finished() {
        trainer.step()?;
        let agreed = trainer.agree()?;
        if !agreed.stop {
            trainer.evaluate_if_due();
        }
        trainer.checkpoint_if_due(agreed)?;
        if agreed.stop {
            return Ok(trainer.finish(true));
        }
    }
    Ok(trainer.finish(false))
}

/// A run in progress: the model, its optimizer and data, and what has been logged so far.
pub struct Trainer {
    cfg: Config,
    dist: Dist,
    run_dir: PathBuf,
    tokenizer: Arc<TextTokenizer>,
    vs: nn::VarStore,
    model: ClipModel,
    /// One step's forward and backward (micro-batches, ranks, precision).
    forward_backward: ForwardBackward,
    /// The contrastive loss, whose `logit_scale` bounds the update clamps.
    loss: ClipLoss,
    update: Updater,
    /// `optim.ema_decay`: the weights' moving average, updated after every step.
    ema: Option<Ema>,
    schedule: LrSchedule,
    evaluator: Option<Evaluator>,
    loader: DeviceBatches,
    state: TrainState,
    /// Where this rank's data stream continues after the last step.
    position: StreamState,
    log: MetricsLog,
    /// `log.sample_keys`: this rank's sample keys of every step.
    keys_log: Option<SampleKeysLog>,
    meter: Meter,
    stop: StopToken,
    /// The vote cast after this step among several ranks, read after the next (see `agree`).
    vote: Option<(u64, Tensor)>,
    /// `checkpoint.every_minutes` on rank 0.
    clock: CheckpointClock,
    /// The step this run ends at (`optim.steps`, or `stop_at_step` before it).
    last_step: u64,
    skipped: SkipCounts,
    summary: TrainSummary,
    /// Rank 0's exclusive hold on the run folder, released when the trainer is dropped.
    _lock: Option<checkpoint::RunLock>,
}

impl Trainer {
    /// Everything the run needs, from `cfg`: plans the run (every start-up refusal, before
    /// anything is allocated), joins the job, builds (or restores) the model and optimizer,
    /// starts the data and opens the log.
    pub fn build(cfg: &Config, opts: &TrainOptions) -> Result<Self, TrainError> {
        let plan = RunPlan::new(cfg, &opts.resume)?;
        let dist = plan.join()?;
        if dist.is_main() {
            for line in plan.describe() {
                tracing::info!("{line}");
            }
        }
        let cfg = plan.cfg.clone();
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        tch::manual_seed(cfg.run.seed as i64);
        let run_dir = plan.run_dir();
        let lock = take_run_dir(&run_dir, &dist)?;
        let init = plan.init.as_ref().filter(|_| plan.resume_from.is_none());
        let (mut vs, model) = build::build_model(&cfg, &plan.spec, plan.device, init)?;
        apply_finetune(&cfg, &vs);
        let mut opt = optimizer(&cfg, &vs);
        let state = match &plan.resume_from {
            Some(dir) => resume::restore(dir, &dist, &mut vs, &mut opt)?,
            None => fresh_state(&cfg),
        };
        let params: Vec<Tensor> = named_variables(&vs).into_iter().map(|(_, t)| t).collect();
        dist.broadcast_from_main(&params)?;
        // Started from the weights every rank now holds; a resumed run continues its saved one.
        let o = &cfg.optim;
        let mut ema =
            (o.ema_decay > 0.0).then(|| Ema::new(&named_variables(&vs), o.ema_decay, o.ema_warmup));
        if let (Some(ema), Some(dir)) = (&mut ema, &plan.resume_from) {
            resume::restore_ema(dir, ema)?;
        }
        let update = Updater::new(&cfg, plan.device, opt, &params, &state)?;
        let start = resume::StreamStart::of(&state);
        let (loader, position) = input::start_loader(&plan, &start, &dist)?;
        let (log, keys_log) = open_logs(&cfg, &dist, &run_dir, state.step)?;
        if let Some(dir) = &plan.resume_from {
            let at = state.step;
            log.println(&format!("resumed from {} at step {at}", dir.display()));
        }
        let RunPlan {
            tokenizer,
            evaluator,
            device,
            ..
        } = plan;
        Ok(Self {
            forward_backward: ForwardBackward::new(&cfg, device, params),
            loss: ClipLoss::new(&cfg.loss),
            position,
            schedule: LrSchedule::new(&cfg.optim),
            last_step: opts
                .stop_at_step
                .map_or(cfg.optim.steps, |s| s.min(cfg.optim.steps)),
            summary: TrainSummary::starting(&run_dir, state.step),
            meter: Meter::starting_at(Instant::now()),
            stop: opts.stop.clone(),
            vote: None,
            clock: CheckpointClock::new(cfg.checkpoint.every_minutes, Instant::now(), state.step),
            skipped: SkipCounts::default(),
            _lock: lock,
            cfg,
            dist,
            run_dir,
            tokenizer,
            vs,
            model,
            update,
            ema,
            evaluator,
            loader,
            state,
            log,
            keys_log,
        })
    }

    /// Whether the run has reached its last step.
    pub fn finished(&self) -> bool {
        self.state.step >= self.last_step
    }

    /// One optimizer step on the next batch, logged every `log.every` steps and at the last.
    pub fn step(&mut self) -> Result<(), TrainError> {
        let waiting = Instant::now();
        let batch = self.loader.next_batch()?.ok_or(TrainError::StreamEnded)?;
        self.meter.waited(waiting.elapsed());
        let lr = self.schedule.lr_at(self.state.step);
        let (images, tokens) = (&batch.images, &batch.tokens);
        // Only a loss that masks same-class pairs reads the labels (and gathers them).
        let classes = batch
            .labels
            .as_deref()
            .filter(|_| self.cfg.loss.mask_same_class)
            .map(Tensor::from_slice);
        let scaler = self.update.scaler();
        let step = self.state.step + 1;
        let loss = self.forward_backward.run(
            &self.model,
            &self.loss,
            (images, tokens, classes.as_ref()),
            &self.dist,
            scaler,
            step,
        )?;
        let applied = self.update.apply(step, loss, lr, &self.model, &self.loss)?;
        if let Some(ema) = &mut self.ema {
            ema.update(step);
        }
        let samples = batch.images.size()[0] as u64 * self.dist.world_size as u64;
        self.state.step = step;
        self.state.samples_seen += samples;
        if let Some(keys) = &mut self.keys_log {
            keys.record(step, &batch.keys);
        }
        self.position = batch.state;
        self.skipped = batch.skipped;
        self.meter.trained(samples);
        if step % self.cfg.log.every == 0 || step == self.last_step {
            self.settle()?;
            self.log_step(&applied, lr);
        }
        Ok(())
    }

    /// Brings the skipped-step counts (and the fp16 loss scale) in `state` up to date, ending
    /// the run after `optim.max_bad_steps` bad steps in a row. Reads the device.
    fn settle(&mut self) -> Result<(), TrainError> {
        let log = &self.log;
        let step = self.state.step;
        self.update.settle(&mut self.state, |m| {
            log.println(&format!("step {step}: {m}"))
        })?;
        Ok(())
    }

    fn log_step(&mut self, applied: &Applied, lr: f64) {
        let (loss, grad_norm, _) = applied.read();
        let rate = self.meter.take_window(Instant::now());
        let scale = self.model.logit_scale().double_value(&[]).exp();
        let mut m = Metrics::new();
        m.insert("loss", loss);
        m.insert("lr", lr);
        m.insert("temperature", 1.0 / scale);
        m.insert("grad_norm", grad_norm);
        m.insert("samples_per_s", rate.samples_per_s);
        m.insert("data_wait_fraction", rate.data_wait_fraction);
        m.insert("skipped_samples", self.skipped.total());
        m.insert("bad_steps", self.state.bad_steps_total);
        if let Some(s) = self.state.loss_scale {
            m.insert("loss_scale", s.scale);
        }
        self.log.log("train", self.state.step, &m);
        self.summary.losses.push((self.state.step, loss));
    }

    /// Whether to stop (the run was asked to, on any rank) and whether to checkpoint now
    /// (rank 0's `checkpoint.every_minutes` clock), agreed by every rank.
    /// Several ranks, once training: the vote cast after step k is read after step k+1, so the
    /// host never waits for the GPU to finish the step it has just queued; every rank reads
    /// the same vote at the same step, so they all act together, one step after the cause.
    pub fn agree(&mut self) -> Result<Agreement, TrainError> {
        let step = self.state.step;
        let mine = Agreement {
            stop: self.stop.is_stopped(),
            checkpoint: self.dist.is_main() && self.clock.request(Instant::now()),
        };
        if self.dist.world_size == 1 {
            return Ok(mine);
        }
        if step == self.summary.first_step {
            return Ok(self.dist.agree(mine)?);
        }
        let vote = self.dist.start_vote(mine)?;
        let Some((cast_at, last)) = self.vote.replace((step, vote)) else {
            return Ok(Agreement::default());
        };
        let mut agreed = Dist::vote_result(&last);
        agreed.checkpoint &= self.clock.still_wanted(cast_at);
        Ok(agreed)
    }

    /// Evaluates the `[eval]` sets every `eval.every` steps and at the last step, on rank 0 (the
    /// other ranks wait for it in the next collective). A broken evaluation set must not end
    /// hours of training: its error is logged and training goes on.
    pub fn evaluate_if_due(&mut self) {
        let Some(ev) = &self.evaluator else {
            return;
        };
        let step = self.state.step;
        let due = (ev.every > 0 && step % ev.every == 0) || step == self.last_step;
        if !due || !self.dist.is_main() {
            return;
        }
        let started = Instant::now();
        let encoder = Encoder::new(
            &self.model,
            self.tokenizer.clone(),
            self.forward_backward.device,
            Some(self.cfg.run.precision),
            self.cfg.eval.batch_size,
        );
        let raw = ev.run(&encoder);
        // The average, evaluated in the model's place and swapped back; its figures go into
        // the same row as `ema/NAME`.
        let averaged = self.ema.as_mut().map(|ema| {
            ema.swap();
            let r = ev.run(&encoder);
            ema.swap();
            r
        });
        match raw {
            Ok(r) => {
                let mut metrics = r.metrics();
                if let Some(Ok(a)) = &averaged {
                    for (k, v) in a.metrics().iter() {
                        metrics.insert(format!("ema/{k}"), v);
                    }
                }
                self.log.log("eval", step, &metrics);
                self.summary.eval = Some((step, r));
            }
            Err(e) => self
                .log
                .println(&format!("step {step}: evaluation failed: {e}")),
        }
        if let Some(Err(e)) = averaged {
            let m = format!("step {step}: evaluation of the EMA weights failed: {e}");
            self.log.println(&m);
        }
        self.meter.exclude(started.elapsed());
    }

    /// Writes a checkpoint every `checkpoint.every` steps, at the last step, and when the
    /// ranks agreed to (stopping, or `checkpoint.every_minutes` passed).
    pub fn checkpoint_if_due(&mut self, agreed: Agreement) -> Result<(), TrainError> {
        let step = self.state.step;
        let every = self.cfg.checkpoint.every;
        let by_step = step == self.last_step || (every > 0 && step % every == 0);
        if !(agreed.stop || agreed.checkpoint || by_step) {
            return Ok(());
        }
        self.settle()?;
        // Every rank's data position goes into rank 0's checkpoint; the barrier keeps the
        // others from running ahead (or exiting) before it is complete.
        self.state.ranks = resume::gather_positions(&self.dist, &self.position)?;
        if self.dist.is_main() {
            let ema = self.ema.as_ref().map(Ema::tensors);
            let ckpt = Checkpoint {
                model: &named_variables(&self.vs),
                optimizer: &self.update.opt.state_tensors(),
                ema: ema.as_deref(),
                state: &self.state,
                config_toml: &self.cfg.to_toml(),
                tokenizer_json: Some(Path::new(&self.cfg.data.tokenizer)),
            };
            let saved = checkpoint::save(&self.run_dir, &ckpt, self.cfg.checkpoint.keep)?;
            if agreed.checkpoint && !by_step {
                let minutes = self.cfg.checkpoint.every_minutes;
                self.log.println(&format!(
                    "step {step}: checkpoint (checkpoint.every_minutes = {minutes} passed)"
                ));
            }
            self.summary.checkpoint = Some(saved);
        }
        self.dist.barrier()?;
        self.clock.saved(step, Instant::now());
        Ok(())
    }

    /// Closes the log and reports the run; `interrupted` when it stopped on its token.
    pub fn finish(mut self, interrupted: bool) -> TrainSummary {
        let rate = self.meter.run(Instant::now());
        self.log.finish();
        TrainSummary {
            last_step: self.state.step,
            samples_per_s: rate.samples_per_s,
            data_wait_fraction: rate.data_wait_fraction,
            interrupted,
            skipped_samples: self.skipped.to_string(),
            ..self.summary
        }
    }
}

impl TrainSummary {
    fn starting(run_dir: &Path, first_step: u64) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            first_step,
            last_step: first_step,
            losses: vec![],
            samples_per_s: 0.0,
            data_wait_fraction: 0.0,
            checkpoint: None,
            interrupted: false,
            skipped_samples: String::new(),
            eval: None,
        }
    }
}

/// Freezes what `[finetune]` locks (and resets `logit_scale` if asked), before the optimizer
/// is built so frozen parameters get no state.
fn apply_finetune(cfg: &Config, vs: &nn::VarStore) {
    let ft = finetune::apply(&cfg.finetune, &cfg.model, cfg.loss.kind, vs);
    if ft.frozen_tensors > 0 {
        tracing::info!(
            "finetune: {} parameters frozen, {} trainable",
            ft.frozen_params,
            ft.trainable_params
        );
    }
}

fn optimizer(cfg: &Config, vs: &nn::VarStore) -> AdamW {
    let mut opt = AdamW::new(named_variables(vs), &cfg.optim, model::no_weight_decay);
    opt.set_lr_scales(|name| finetune::lr_scale(&cfg.finetune, &cfg.model, name));
    opt
}

/// Model variables by (HF) name, sorted so files and optimizer state have a stable order.
fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A run's state before its first step (every rank's position is filled in at checkpoints).
fn fresh_state(cfg: &Config) -> TrainState {
    TrainState {
        step: 0,
        samples_seen: 0,
        ranks: vec![],
        bad_steps_in_a_row: 0,
        bad_steps_total: 0,
        seed: cfg.run.seed,
        cliptrain_version: env!("CARGO_PKG_VERSION").into(),
        loss_scale: None,
    }
}

/// Creates the run folder, locked by rank 0 for as long as the run lives (see
/// [`checkpoint::RunLock`]); the other ranks write only their sample-key logs there.
fn take_run_dir(run_dir: &Path, dist: &Dist) -> Result<Option<checkpoint::RunLock>, TrainError> {
    let lock = dist
        .is_main()
        .then(|| checkpoint::RunLock::acquire(run_dir))
        .transpose()?;
    std::fs::create_dir_all(run_dir).map_err(|e| {
        TrainError::Setup(format!(
            "run.output_dir: creating {}: {e}",
            run_dir.display()
        ))
    })?;
    Ok(lock)
}

/// The metrics log (see [`open_log`]) and, with `log.sample_keys`, this rank's sample keys.
fn open_logs(
    cfg: &Config,
    dist: &Dist,
    run_dir: &Path,
    first_step: u64,
) -> Result<(MetricsLog, Option<SampleKeysLog>), TrainError> {
    let log = open_log(cfg, dist, run_dir, first_step)?;
    let keys_log = cfg
        .log
        .sample_keys
        .then(|| SampleKeysLog::open(run_dir, dist.rank, first_step))
        .transpose()
        .map_err(|source| TrainError::Log {
            path: run_dir.to_path_buf(),
            source,
        })?;
    Ok((log, keys_log))
}

/// Rank 0 writes `metrics.jsonl` (and TensorBoard, a progress bar); the other ranks log nothing.
fn open_log(
    cfg: &Config,
    dist: &Dist,
    run_dir: &Path,
    first_step: u64,
) -> Result<MetricsLog, TrainError> {
    if !dist.is_main() {
        return Ok(MetricsLog::silent());
    }
    let bar = MetricsLog::want_bar(cfg.log.progress);
    MetricsLog::open(
        run_dir,
        cfg.log.tensorboard,
        bar,
        first_step,
        cfg.optim.steps,
    )
    .map_err(|source| TrainError::Log {
        path: run_dir.to_path_buf(),
        source,
    })
}

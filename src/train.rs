//! The training loop: build everything from the config, then step, log, checkpoint.
//!
//! Reads top-down: [`train`] is the story; helpers below it do one thing each. This is the only
//! module that changes parameters.
use crate::checkpoint::{self, Checkpoint, TrainState};
use crate::config::{Config, DataMode, DeviceSpec, Precision};
use crate::data::loader::{Loader, LoaderOptions, SampleKeys};
use crate::data::spec::parse_spec;
use crate::data::stream::{Order, ShardStream, StreamOptions};
use crate::data::transform::{Augment, ImageTransform};
use crate::eval::{Encoder, EvalResults, Evaluator};
use crate::log::{Metrics, MetricsLog};
use crate::loss::ClipLoss;
use crate::model::{self, ClipModel};
use crate::optim::{AdamW, LrSchedule};
use crate::precision::Autocast;
use crate::text::TextTokenizer;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// How a run starts.
#[derive(Debug, Clone)]
pub enum Resume {
    /// From scratch (refused when the run folder already has checkpoints).
    No,
    /// From the newest complete checkpoint of this run, or from scratch when there is none.
    Auto,
    /// From this checkpoint or run folder.
    From(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub resume: Resume,
    /// End the run after this step with a checkpoint (a preempted job); the schedule still
    /// spans `optim.steps`.
    pub stop_at_step: Option<u64>,
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
    pub interrupted: bool,
    pub skipped_samples: String,
    /// The last evaluation of the `[eval]` sets, at its step.
    pub eval: Option<(u64, EvalResults)>,
}

/// Set by SIGINT/SIGTERM: finish the step, checkpoint, exit cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Trains per `cfg` (the effective config, already validated). Started by torchrun or
/// `cliptrain launch` (`WORLD_SIZE` etc. set), this process is one rank of a data-parallel job.
pub fn train(cfg: &Config, opts: &TrainOptions) -> anyhow::Result<TrainSummary> {
    // model.init_from may set the model's dimensions and tokenizer: this is the effective config.
    let (cfg, init) = crate::source::prepare(cfg)?;
    let (dist, cfg) = crate::dist::join_from_env(&cfg)?;
    let cfg = &cfg;
    let device = cfg.run.device.resolve();
    if cfg.run.threads > 0 {
        tch::set_num_threads(cfg.run.threads as i32);
    }
    tch::manual_seed(cfg.run.seed as i64);
    let run_dir = cfg.run.output_dir.join(&cfg.run.name);

    let tokenizer = Arc::new(load_tokenizer(cfg)?);
    let mut vs = nn::VarStore::new(device);
    let model = ClipModel::new(
        &vs.root(),
        &cfg.model.spec(tokenizer.eot_id() as i64, cfg.loss.kind),
    )?;
    let loss_fn = ClipLoss::new(&cfg.loss);
    let resume_from = resume_dir(&run_dir, &opts.resume)?;
    if let (Some(init), None) = (&init, &resume_from) {
        crate::source::init_weights(init, &mut vs, cfg.model.init_strict)?;
    }
    let ft = crate::finetune::apply(&cfg.finetune, &cfg.model, cfg.loss.kind, &vs);
    let evaluator = Evaluator::from_config(cfg).context("preparing the [eval] sets")?;
    let mut opt = AdamW::new(named_variables(&vs), &cfg.optim, model::no_weight_decay);
    opt.set_lr_scales(|name| crate::finetune::lr_scale(&cfg.finetune, &cfg.model, name));
    if ft.frozen_tensors > 0 {
        tracing::info!(
            "finetune: {} parameters frozen, {} trainable",
            ft.frozen_params,
            ft.trainable_params
        );
    }
    let schedule = LrSchedule::new(&cfg.optim);

    let mut state = match &resume_from {
        Some(dir) => restore(dir, cfg, &mut vs, &mut opt)?,
        None => TrainState {
            world_size: dist.world_size,
            ..fresh_state(cfg)
        },
    };
    if resume_from.is_some() {
        state.data = dist.stream_state_of(&state)?;
    }
    let params: Vec<Tensor> = named_variables(&vs).into_iter().map(|(_, t)| t).collect();
    dist.broadcast_from_main(&params)?;
    let grad_sync = crate::dist::GradSync::new(params, cfg.dist.bucket_mb << 20);
    let span = crate::dist::LossSpan {
        gather_with_grad: cfg.dist.gather_with_grad,
        local_loss: cfg.dist.local_loss,
    };
    let first_step = state.step;
    let mut loader = start_loader(cfg, tokenizer.clone(), &state, &dist)?;
    let config_toml = cfg.to_toml();
    let tokenizer_path = PathBuf::from(&cfg.data.tokenizer);

    install_signal_handlers();
    let last_step = opts
        .stop_at_step
        .unwrap_or(cfg.optim.steps)
        .min(cfg.optim.steps);
    let mut log = if dist.is_main() {
        MetricsLog::open(
            &run_dir,
            cfg.log.tensorboard,
            MetricsLog::want_bar(cfg.log.progress),
            first_step,
            cfg.optim.steps,
        )?
    } else {
        MetricsLog::silent()
    };
    if let Some(dir) = &resume_from {
        log.println(&format!(
            "resumed from {} at step {first_step}",
            dir.display()
        ));
    }
    let mut summary = TrainSummary {
        run_dir: run_dir.clone(),
        first_step,
        last_step: first_step,
        losses: vec![],
        samples_per_s: 0.0,
        data_wait_fraction: 0.0,
        checkpoint: None,
        interrupted: false,
        skipped_samples: String::new(),
        eval: None,
    };
    let save = |state: &TrainState, vs: &nn::VarStore, opt: &AdamW| -> anyhow::Result<PathBuf> {
        let ckpt = Checkpoint {
            model: &named_variables(vs),
            optimizer: &opt.state_tensors(),
            state,
            config_toml: &config_toml,
            tokenizer_json: Some(&tokenizer_path),
        };
        Ok(checkpoint::save(&run_dir, &ckpt, cfg.checkpoint.keep)?)
    };

    let (mut window_start, mut window_wait, mut window_samples) = (Instant::now(), 0.0f64, 0u64);
    let (run_start, mut total_wait) = (Instant::now(), 0.0f64);
    let mut eval_time = std::time::Duration::ZERO;
    let mut samples_this_run = 0u64;
    let mut last_skipped = crate::data::SkipCounts::default();
    while state.step < last_step {
        let waited = Instant::now();
        let mut batch = loader.next_batch()?.context("the training stream ended")?;
        let wait = waited.elapsed().as_secs_f64();
        window_wait += wait;
        total_wait += wait;

        let lr = schedule.lr_at(state.step);
        let loss = match dist.group() {
            None => train_step(
                &model,
                &loss_fn,
                &batch.images,
                &batch.tokens,
                cfg.optim.micro_batch_size,
                cfg.run.precision,
                device,
            )?,
            Some(group) => crate::dist::train_step(
                &model,
                &loss_fn,
                &batch.images,
                &batch.tokens,
                cfg.optim.micro_batch_size,
                cfg.run.precision,
                device,
                group,
                span,
                &grad_sync,
            )?,
        };
        let n = batch.images.size()[0] as u64 * dist.world_size as u64;
        state.data = batch.state.clone();
        if !loss.is_finite() {
            opt.zero_grad();
            state.bad_steps_in_a_row += 1;
            state.bad_steps_total += 1;
            log.println(&format!(
                "step {}: non-finite loss {loss}; step skipped",
                state.step + 1
            ));
            if state.bad_steps_in_a_row >= cfg.optim.max_bad_steps {
                bail!(
                    "{} non-finite losses in a row (optim.max_bad_steps = {}); stopping. The last good checkpoint in {} is intact; \
                     lower optim.lr or set optim.grad_clip_norm before resuming",
                    state.bad_steps_in_a_row,
                    cfg.optim.max_bad_steps,
                    run_dir.display()
                );
            }
        } else {
            state.bad_steps_in_a_row = 0;
        }
        let grad_norm = if loss.is_finite() {
            let norm = opt.clip_grad_norm(cfg.optim.grad_clip_norm);
            opt.step(lr);
            crate::loss::clamp_logit_scale(model.logit_scale(), cfg.loss.max_logit_scale);
            opt.zero_grad();
            norm
        } else {
            f64::NAN
        };
        state.step += 1;
        state.samples_seen += n;
        samples_this_run += n;
        window_samples += n;

        if state.step % cfg.log.every == 0 || state.step == last_step {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let scale = model.logit_scale().double_value(&[]).exp();
            let mut m = Metrics::new();
            m.insert("loss".into(), loss);
            m.insert("lr".into(), lr);
            m.insert("temperature".into(), 1.0 / scale);
            m.insert("grad_norm".into(), grad_norm);
            m.insert("samples_per_s".into(), window_samples as f64 / secs);
            m.insert("data_wait_fraction".into(), window_wait / secs);
            m.insert("skipped_samples".into(), batch.skipped.total() as f64);
            m.insert("bad_steps".into(), state.bad_steps_total as f64);
            log.log("train", state.step, &m);
            summary.losses.push((state.step, loss));
            (window_start, window_wait, window_samples) = (Instant::now(), 0.0, 0);
        }
        last_skipped = std::mem::take(&mut batch.skipped);
        drop(batch);

        let stopping = dist.any(STOP.load(Ordering::SeqCst))?;
        // Rank 0 evaluates; the other ranks wait for it in the next collective.
        if let Some(ev) = &evaluator
            && dist.is_main()
            && !stopping
            && ((ev.every > 0 && state.step % ev.every == 0) || state.step == last_step)
        {
            let started = Instant::now();
            let encoder = Encoder {
                model: &model,
                tokenizer: tokenizer.clone(),
                device,
                precision: cfg.run.precision,
                batch_size: cfg.eval.batch_size,
            };
            // A broken evaluation set must not end hours of training: report and go on.
            match ev.run(&encoder) {
                Ok(r) => {
                    log.log("eval", state.step, &r.metrics());
                    summary.eval = Some((state.step, r));
                }
                Err(e) => log.println(&format!("step {}: evaluation failed: {e}", state.step)),
            }
            // Evaluation time is not training throughput.
            window_start += started.elapsed();
            eval_time += started.elapsed();
        }
        let periodic = cfg.checkpoint.every > 0 && state.step % cfg.checkpoint.every == 0;
        if periodic || state.step == last_step || stopping {
            // Every rank's data position goes into rank 0's checkpoint; the barrier keeps the
            // others from running ahead (or exiting) before it is complete.
            dist.collect_stream_states(&mut state)?;
            if dist.is_main() {
                summary.checkpoint = Some(save(&state, &vs, &opt)?);
            }
            dist.barrier()?;
        }
        if stopping {
            summary.interrupted = true;
            break;
        }
    }
    let elapsed = (run_start.elapsed() - eval_time).as_secs_f64().max(1e-9);
    summary.last_step = state.step;
    summary.skipped_samples = last_skipped.to_string();
    summary.samples_per_s = samples_this_run as f64 / elapsed;
    summary.data_wait_fraction = total_wait / elapsed;
    log.finish();
    Ok(summary)
}

/// One optimizer step's forward and backward; returns the loss (gradients are left in the
/// parameters). With `micro_batch_size < batch_size` the gradients are those of the full
/// contrastive batch, computed with feature caching (GradCache): embed every micro-batch
/// without autograd, take the loss and its gradient w.r.t. the embeddings over the whole batch,
/// then re-embed each micro-batch with autograd and back-propagate its slice of that gradient.
/// `logit_scale` (and the SigLIP bias) get their gradient once, from the full-batch loss.
pub fn train_step(
    model: &ClipModel,
    loss_fn: &ClipLoss,
    images: &Tensor,
    tokens: &Tensor,
    micro_batch_size: usize,
    precision: Precision,
    device: Device,
) -> anyhow::Result<f64> {
    let images = images.to_device(device);
    let tokens = tokens.to_device(device);
    let b = images.size()[0];
    let micro = match micro_batch_size as i64 {
        0 => b,
        m => m.min(b),
    };
    if micro >= b {
        let loss = {
            let _ac = Autocast::enter(device, precision)?;
            let i = model.encode_image(&images);
            let t = model.encode_text(&tokens);
            loss_fn.forward(
                &i.to_kind(Kind::Float),
                &t.to_kind(Kind::Float),
                model.logit_scale(),
                model.logit_bias(),
            )
        };
        loss.backward();
        return Ok(loss.double_value(&[]));
    }
    let chunks = |x: &Tensor| x.split(micro, 0);
    let (img_chunks, tok_chunks) = (chunks(&images), chunks(&tokens));
    // 1. Features of every micro-batch, no graph kept.
    let ac = Autocast::enter(device, precision)?;
    let (cached_i, cached_t): (Vec<Tensor>, Vec<Tensor>) = tch::no_grad(|| {
        img_chunks
            .iter()
            .zip(&tok_chunks)
            .map(|(i, t)| {
                (
                    model.encode_image(i).to_kind(Kind::Float),
                    model.encode_text(t).to_kind(Kind::Float),
                )
            })
            .unzip()
    });
    drop(ac);
    // 2. Full-batch loss and its gradient w.r.t. the features.
    let feats_i = Tensor::cat(&cached_i, 0).detach().set_requires_grad(true);
    let feats_t = Tensor::cat(&cached_t, 0).detach().set_requires_grad(true);
    let loss = loss_fn.forward(&feats_i, &feats_t, model.logit_scale(), model.logit_bias());
    loss.backward();
    let (grad_i, grad_t) = (feats_i.grad(), feats_t.grad());
    // 3. Each micro-batch again, with its graph, back-propagating its slice of the gradient.
    for (j, (i, t)) in img_chunks.iter().zip(&tok_chunks).enumerate() {
        let (start, len) = (j as i64 * micro, i.size()[0]);
        let surrogate = {
            let _ac = Autocast::enter(device, precision)?;
            let fi = model.encode_image(i).to_kind(Kind::Float);
            let ft = model.encode_text(t).to_kind(Kind::Float);
            (fi * grad_i.narrow(0, start, len)).sum(Kind::Float)
                + (ft * grad_t.narrow(0, start, len)).sum(Kind::Float)
        };
        surrogate.backward();
    }
    Ok(loss.double_value(&[]))
}

fn load_tokenizer(cfg: &Config) -> anyhow::Result<TextTokenizer> {
    if cfg.data.tokenizer.is_empty() {
        bail!(
            "data.tokenizer is empty: training needs a tokenizer.json (train one with `cliptrain tokenizer train`)"
        );
    }
    let tok = TextTokenizer::from_file(&cfg.data.tokenizer, cfg.model.text.context_length)
        .with_context(|| format!("loading data.tokenizer = {}", cfg.data.tokenizer))?;
    if tok.vocab_size() > cfg.model.text.vocab_size {
        bail!(
            "data.tokenizer {} has {} ids but model.text.vocab_size = {}; raise model.text.vocab_size to at least {}",
            cfg.data.tokenizer,
            tok.vocab_size(),
            cfg.model.text.vocab_size,
            tok.vocab_size()
        );
    }
    Ok(tok)
}

/// Model variables by (HF) name, sorted so files and optimizer state have a stable order.
fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn fresh_state(cfg: &Config) -> TrainState {
    TrainState {
        step: 0,
        samples_seen: 0,
        data: Default::default(),
        bad_steps_in_a_row: 0,
        bad_steps_total: 0,
        config_hash: config_hash(cfg),
        seed: cfg.run.seed,
        cliptrain_version: env!("CARGO_PKG_VERSION").into(),
        world_size: 1,
        rank_data: vec![],
    }
}

/// Hash of what must not change across a resume (everything but logging, checkpoint cadence,
/// the step budget's stop point and threads).
pub fn config_hash(cfg: &Config) -> String {
    let mut c = cfg.clone();
    c.log = Default::default();
    c.checkpoint = Default::default();
    c.eval = Default::default();
    c.run.threads = 0;
    c.run.device = DeviceSpec::Auto;
    c.data.workers = 0;
    c.data.prefetch = 1;
    c.dist.timeout_s = 0;
    c.dist.bucket_mb = 0;
    crate::data::stream::stable_hash(&c.to_toml())
}

fn resume_dir(run_dir: &Path, resume: &Resume) -> anyhow::Result<Option<PathBuf>> {
    match resume {
        Resume::No => {
            if !checkpoint::list(run_dir).is_empty() {
                bail!(
                    "{} already has checkpoints; continue it with `--resume auto`, or choose another run.name",
                    run_dir.display()
                );
            }
            Ok(None)
        }
        Resume::Auto => Ok(checkpoint::resolve(run_dir).ok()),
        Resume::From(p) => Ok(Some(checkpoint::resolve(p)?)),
    }
}

fn restore(
    dir: &Path,
    cfg: &Config,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
) -> anyhow::Result<TrainState> {
    let state = checkpoint::read_state(dir)?;
    if state.config_hash != config_hash(cfg) {
        bail!(
            "{} was written with a different config (model, data, loss or optimizer settings changed); \
             resume with the config.toml saved in that folder",
            dir.display()
        );
    }
    let weights = dir.join("model.safetensors");
    let tensors = checkpoint::read_tensors(&weights)?;
    model::load_named(vs, tensors, model::LoadMode::Strict, &weights)
        .with_context(|| format!("loading {}", weights.display()))?;
    opt.load_state(checkpoint::read_tensors(
        &dir.join("optimizer.safetensors"),
    )?)
    .with_context(|| format!("loading {}", dir.join("optimizer.safetensors").display()))?;
    Ok(state)
}

fn start_loader(
    cfg: &Config,
    tokenizer: Arc<TextTokenizer>,
    state: &TrainState,
    dist: &crate::dist::Dist,
) -> anyhow::Result<Loader> {
    let d = &cfg.data;
    if d.train.is_empty() {
        bail!(
            "data.train is empty: name the training shards, e.g. data.train = \"data/synth/train-{{000000..000007}}.tar\""
        );
    }
    let shards = parse_spec(&d.train)?;
    let order = match d.mode {
        DataMode::Epoch => Order::Epoch,
        DataMode::Resampled => Order::Resampled,
    };
    let stream_opts = StreamOptions {
        order,
        shuffle_buffer: d.shuffle_buffer,
        seed: cfg.run.seed,
        rank: dist.rank,
        world_size: dist.world_size,
    };
    let stream = if state.step > 0 {
        ShardStream::restore(shards, stream_opts, &state.data)?
    } else {
        ShardStream::new(shards, stream_opts)?
    };
    let threads = crate::runtime::cpu_threads(cfg.run.threads);
    let opts = LoaderOptions {
        // Each rank loads its share of the global contrastive batch.
        batch_size: cfg.optim.batch_size / dist.world_size,
        transform: ImageTransform {
            size: cfg.model.vision.image_size as u32,
            augment: Augment::Train {
                scale: d.crop_scale,
            },
            max_pixels: d.max_image_pixels,
            seed: cfg.run.seed,
        },
        keys: SampleKeys::from_config(d),
        workers: if d.workers > 0 { d.workers } else { threads },
        prefetch: d.prefetch,
        mean: d.image_mean,
        std: d.image_std,
    };
    Ok(Loader::start(stream, tokenizer, opts)?)
}

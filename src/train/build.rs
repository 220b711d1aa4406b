//! Where the model comes from: the one place in `train` that opens `model.init_from`, builds
//! the towers and loads a checkpoint's weights, all through [`crate::source`] and the one strict
//! loader in [`crate::model`].
use super::TrainError;
use crate::checkpoint;
use crate::config::Config;
use crate::model::{self, ClipModel, LoadMode};
use crate::source::{self, ModelSource};
use std::path::Path;
use tch::nn;

/// The config the run really uses: `model.init_from` may set the model's dimensions, its
/// tokenizer and normalisation. Also returns the source to initialise a fresh run from.
/// Checked against this host first (device, threads, memory, a writable run folder), so a
/// setting that cannot work is refused before anything is allocated.
pub(super) fn effective_config(cfg: &Config) -> Result<(Config, Option<ModelSource>), TrainError> {
    super::budget::check_device(cfg)?;
    let (mut cfg, init) = source::prepare(cfg)?;
    super::budget::fit_to_host(&mut cfg)?;
    writable_run_dir(&cfg)?;
    Ok((cfg, init))
}

/// Creates `run.output_dir/run.name` and checks that a file can be written there, naming the
/// path when not (`run.output_dir` a file, or read-only).
fn writable_run_dir(cfg: &Config) -> Result<(), TrainError> {
    let run_dir = cfg.run.output_dir.join(&cfg.run.name);
    let refuse = |what: String| {
        TrainError::Setup(format!(
            "run.output_dir = {}: {what}; choose a folder this user can write",
            cfg.run.output_dir.display()
        ))
    };
    // Named per process: ranks of one job check the same folder at the same moment, and one
    // rank's `remove_file` must not find the other's probe gone.
    let probe = run_dir.join(format!(".cliptrain-write-check-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| refuse(format!("cannot write in {}: {e}", run_dir.display())))
}

/// The model's variables and towers on the run's device, initialised from `init` when given
/// (a fresh run of `model.init_from`) and at random otherwise (a resume loads over them).
pub(super) fn build_model(
    cfg: &Config,
    eot_id: i64,
    init: Option<&ModelSource>,
) -> Result<(nn::VarStore, ClipModel), TrainError> {
    let mut vs = nn::VarStore::new(cfg.run.device.resolve());
    let mut model = ClipModel::new(&vs.root(), &cfg.model.spec(eot_id, cfg.loss.kind))?;
    model.set_grad_checkpointing(cfg.model.grad_checkpointing);
    if let Some(init) = init {
        source::init_weights(init, &mut vs, cfg.model.init_strict)?;
    }
    Ok((vs, model))
}

/// Loads the weights of the checkpoint in `dir` into `vs`, strictly.
pub(super) fn load_checkpoint_weights(vs: &mut nn::VarStore, dir: &Path) -> Result<(), TrainError> {
    let path = dir.join("model.safetensors");
    let tensors = checkpoint::read_tensors(&path)?;
    model::load_named(vs, tensors, LoadMode::Strict, &path)
        .map_err(|source| TrainError::Weights { path, source })?;
    Ok(())
}

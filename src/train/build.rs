//! Where the model comes from: the one place in `train` that opens `model.init_from`, builds
//! the towers and loads a checkpoint's weights, so a new model-source API replaces these three
//! functions and nothing else.
use super::TrainError;
use crate::config::Config;
use crate::interop::{self, InitSource};
use crate::model::{self, ClipModel};
use std::path::Path;
use tch::nn;

/// The config the run really uses: `model.init_from` may set the model's dimensions, its
/// tokenizer and normalisation. Also returns the source to initialise a fresh run from.
pub(super) fn effective_config(cfg: &Config) -> Result<(Config, Option<InitSource>), TrainError> {
    Ok(interop::prepare(cfg)?)
}

/// The model's variables and towers on the run's device, initialised from `init` when given
/// (a fresh run of `model.init_from`) and at random otherwise (a resume loads over them).
pub(super) fn build_model(
    cfg: &Config,
    eot_id: i64,
    init: Option<&InitSource>,
) -> Result<(nn::VarStore, ClipModel), TrainError> {
    let mut vs = nn::VarStore::new(cfg.run.device.resolve());
    let model = ClipModel::new(&vs.root(), &cfg.model, eot_id, cfg.loss.kind)?;
    if let Some(init) = init {
        interop::init_weights(init, &mut vs, cfg.model.init_strict)?;
    }
    Ok((vs, model))
}

/// Loads the weights of the checkpoint in `dir` into `vs`.
pub(super) fn load_checkpoint_weights(vs: &mut nn::VarStore, dir: &Path) -> Result<(), TrainError> {
    let path = dir.join("model.safetensors");
    model::load_hf_safetensors(vs, &path).map_err(|source| TrainError::Weights { path, source })
}

//! Where the model comes from: the one place in `train` that builds the towers and loads
//! `model.init_from` (opened by the plan) or a checkpoint's weights, all through
//! [`crate::interop`] and the one strict loader in [`crate::model`].
use super::TrainError;
use crate::checkpoint;
use crate::config::Config;
use crate::interop::{self, ModelSource};
use crate::model::{self, ClipModel, LoadMode, ModelSpec};
use std::path::Path;
use tch::{Device, nn};

/// The model's variables and towers on the run's device, initialised from `init` when given
/// (a fresh run of `model.init_from`) and at random otherwise (a resume loads over them).
pub(super) fn build_model(
    cfg: &Config,
    spec: &ModelSpec,
    device: Device,
    init: Option<&ModelSource>,
) -> Result<(nn::VarStore, ClipModel), TrainError> {
    let mut vs = nn::VarStore::new(device);
    let mut model = ClipModel::new(&vs.root(), spec)?;
    if let Some(lora) = &cfg.finetune.lora {
        check_lora_fits(lora, spec)?;
        model.attach_adapters(&vs.root(), lora);
    }
    model.set_grad_checkpointing(cfg.model.grad_checkpointing);
    if let Some(init) = init {
        interop::init_weights(init, &mut vs, cfg.model.init_strict)?;
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

/// `[finetune.lora]` against the model really built (with `model.init_from`, the source's
/// towers, which config validation could not see).
fn check_lora_fits(lora: &model::LoraConfig, spec: &ModelSpec) -> Result<(), TrainError> {
    match lora
        .size_problems(&spec.vision, &spec.text)
        .into_iter()
        .next()
    {
        Some((key, value, rule)) => Err(TrainError::Model(model::ModelError::Config(format!(
            "{key} = {value} must {rule}"
        )))),
        None => Ok(()),
    }
}

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
    use model::LoraTower;
    for tower in &lora.towers {
        let (name, width, ratio, layers) = match tower {
            LoraTower::Image => (
                "image",
                spec.vision.width,
                spec.vision.mlp_ratio,
                spec.vision.layers,
            ),
            LoraTower::Text => (
                "text",
                spec.text.width,
                spec.text.mlp_ratio,
                spec.text.layers,
            ),
        };
        let side = width.min(model::mlp_width(width, ratio));
        let problem = if lora.rank > side {
            format!(
                "finetune.lora.rank = {} must be at most the {name} tower's width {side}",
                lora.rank
            )
        } else if lora.last_layers > layers {
            format!(
                "finetune.lora.last_layers = {} must be at most the {name} tower's {layers} layers",
                lora.last_layers
            )
        } else {
            continue;
        };
        return Err(TrainError::Model(model::ModelError::Config(problem)));
    }
    Ok(())
}

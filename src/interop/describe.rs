//! What a model folder states before its weights are read: its kind, its model, its
//! normalisation and resize, and which weights file holds it — for [`super::ModelSource::open`].
use super::{MeanStd, SourceError, SourceKind, hf, openclip, preprocess, read_json, torch_file};
use crate::checkpoint;
use crate::config::{Config, ImageResize, ResizeRule};
use crate::model::{ModelKind, ModelSpec};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// What one folder states about its model before the tokenizer is read.
pub(super) struct Described {
    pub(super) kind: SourceKind,
    pub(super) dir: PathBuf,
    pub(super) weights: PathBuf,
    pub(super) spec: ModelSpec,
    pub(super) image_mean_std: Option<MeanStd>,
    pub(super) image_resize: Option<ResizeRule>,
    pub(super) saved: Option<Config>,
}

impl Described {
    /// The file the model's dimensions come from.
    pub(super) fn config_file(&self) -> PathBuf {
        self.dir.join(match self.kind {
            SourceKind::OpenClip => openclip::CONFIG,
            SourceKind::HuggingFace => "config.json",
            SourceKind::Checkpoint => "config.toml",
        })
    }
}

/// A folder's weights file: its safetensors when there, else its PyTorch file when there (HF
/// and OpenCLIP folders; checkpoints are always safetensors), else the safetensors name (for
/// the error that names what is missing).
fn weights_file(dir: &Path, kind: SourceKind) -> PathBuf {
    let (safetensors, pickle) = match kind {
        SourceKind::OpenClip => (openclip::WEIGHTS, Some(torch_file::PICKLE_NAMES[1])),
        SourceKind::HuggingFace => ("model.safetensors", Some(torch_file::PICKLE_NAMES[0])),
        SourceKind::Checkpoint => ("model.safetensors", None),
    };
    let preferred = dir.join(safetensors);
    match pickle.map(|p| dir.join(p)) {
        Some(p) if !preferred.is_file() && p.is_file() => p,
        _ => preferred,
    }
}

/// The tensors of a weights file of either format.
pub(super) fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>, SourceError> {
    if torch_file::is_pickle(path) {
        Ok(torch_file::read(path)?)
    } else {
        Ok(checkpoint::read_tensors(path)?)
    }
}

/// The folder's kind, model and normalisation, from its config file; for one weights file, its
/// folder's, with that file as the weights (HF and OpenCLIP folders: a checkpoint's weights
/// are its own).
pub(super) fn describe(path: &Path) -> Result<Described, SourceError> {
    if !path.is_file() {
        return describe_folder(path, None);
    }
    let is_weights =
        torch_file::is_pickle(path) || path.extension().is_some_and(|e| e == "safetensors");
    if !is_weights {
        return Err(SourceError::NotWeights(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.join(openclip::CONFIG).is_file() && !dir.join("config.json").is_file() {
        return Err(SourceError::LoneWeights {
            file: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    describe_folder(dir, Some(path))
}

/// [`describe`] for a folder, reading `weights` when given instead of the folder's own.
fn describe_folder(path: &Path, weights: Option<&Path>) -> Result<Described, SourceError> {
    let weights_of = |kind| weights.map_or_else(|| weights_file(path, kind), Path::to_path_buf);
    if path.join(openclip::CONFIG).is_file() {
        let config = path.join(openclip::CONFIG);
        let weights = weights_of(SourceKind::OpenClip);
        let (spec, mean_std) = openclip::read_config(&config, &weights)?;
        let size = spec.vision.image_size;
        let image_resize = preprocess::read_openclip(&config, &read_json(&config)?, size)?;
        return Ok(Described {
            kind: SourceKind::OpenClip,
            dir: path.to_path_buf(),
            weights,
            spec,
            image_mean_std: mean_std,
            image_resize,
            saved: None,
        });
    }
    let hf_weights = weights_of(SourceKind::HuggingFace);
    if path.join("config.json").is_file() && hf_weights.is_file() {
        let spec = hf::read_config(&path.join("config.json"))?;
        // Without a processor file, what transformers' processor for the model defaults to.
        let image_resize = preprocess::read_hf(path, spec.vision.image_size)?.or_else(|| {
            (spec.kind == ModelKind::Siglip).then(|| ResizeRule {
                mode: ImageResize::Squash,
                ..ResizeRule::default()
            })
        });
        return Ok(Described {
            kind: SourceKind::HuggingFace,
            dir: path.to_path_buf(),
            weights: hf_weights,
            image_mean_std: hf::read_preprocessor(path)?,
            image_resize,
            spec,
            saved: None,
        });
    }
    let dir = checkpoint::resolve(path).map_err(|_| SourceError::UnknownSource(path.into()))?;
    let saved = checkpoint::read_config(&dir)?;
    let last_id = saved.model.text.vocab_size as i64 - 1;
    Ok(Described {
        kind: SourceKind::Checkpoint,
        weights: weights_file(&dir, SourceKind::Checkpoint),
        spec: saved.model.spec(last_id, saved.loss.kind),
        image_mean_std: Some((saved.data.image_mean, saved.data.image_std)),
        image_resize: Some(saved.data.resize_rule()),
        saved: Some(saved),
        dir,
    })
}

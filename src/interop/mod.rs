//! Where a model comes from, and where it goes: [`ModelSource`] opens a cliptrain checkpoint
//! (or run folder), a Hugging Face CLIP folder or an OpenCLIP folder the same way for every
//! command that takes one — training's `model.init_from`, `eval`, `embed`, `search`, `export` —
//! and the `export` writers turn a loaded model into the other two kinds. A model on the
//! Hugging Face Hub (`hf:ORG/NAME`) is first fetched into a folder by [`crate::hub`].
//!
//! Every name map lives here: HF names are ours ([`crate::model`] spells them), [`openclip`]
//! maps OpenCLIP's state-dict names onto them and back, [`hf`] reads and writes HF's
//! `config.json` and processor files. Loading goes through [`crate::model::load_named`].
mod describe;
mod header;
pub mod hf;
mod init;
mod loaded;
pub mod merge;
pub mod openclip;
pub mod peft;
mod pickle;
pub mod preprocess;
mod qkv;
mod resize;
pub mod timm_siglip;
pub mod torch_file;

use describe::{describe, read_weights};
pub use init::{init_weights, prepare};
pub use loaded::LoadedModel;

use crate::checkpoint::{self, CheckpointError};
use crate::config::{Config, ResizeRule};
use crate::model::{LoadMode, LoadReport, ModelError, ModelKind, ModelSpec};
use crate::text::{TextError, TextTokenizer, TokenizerOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Tensor, nn};

/// Why a model could not be opened, loaded or exported.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: no such file or folder", .0.display())]
    Missing(PathBuf),
    #[error(
        "{} is not a cliptrain checkpoint or run folder (state.json / latest), a Hugging Face \
         CLIP folder (config.json + model.safetensors or pytorch_model.bin) or an OpenCLIP \
         folder (open_clip_config.json + open_clip_model.safetensors or \
         open_clip_pytorch_model.bin)",
        .0.display()
    )]
    UnknownSource(PathBuf),
    #[error(
        "{}: a weights file is read with its model's description beside it, and its folder {} \
         has neither config.json (Hugging Face) nor open_clip_config.json (OpenCLIP). Put the \
         model's config there; for an OpenCLIP training checkpoint (logs/NAME/checkpoints/*.pt) \
         that is {{\"model_cfg\": open_clip.get_model_config(MODEL)}} as JSON, MODEL being the \
         `model` line of the run's params.txt",
        file.display(),
        dir.display()
    )]
    LoneWeights { file: PathBuf, dir: PathBuf },
    #[error(
        "{}: not a weights file cliptrain reads (.safetensors, or PyTorch's .bin / .pt / .pth); \
         give the model's folder or one of its weights files",
        .0.display()
    )]
    NotWeights(PathBuf),
    #[error(
        "{} has no EMA weights: --ema reads the ema.safetensors of a cliptrain checkpoint trained \
         with optim.ema_decay > 0",
        .0.display()
    )]
    NoEma(PathBuf),
    #[error(transparent)]
    TorchFile(#[from] torch_file::TorchFileError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error(
        "{} has no tokenizer: put its tokenizer.json or SentencePiece model (spiece.model, \
         sentencepiece.bpe.model or tokenizer.model) in the folder (a checkpoint may also name \
         one in data.tokenizer of its config.toml)",
        .0.display()
    )]
    NoTokenizer(PathBuf),
    /// A strict `model.init_from` that does not fit the run's model.
    #[error("{0}\n(set model.init_strict = false to load what fits and keep the rest at its init)")]
    InitMismatch(#[source] ModelError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "{} already has {}; export does not replace files unless asked: choose another --out, or \
         pass --force to replace them",
        dir.display(), files.join(", ")
    )]
    WouldReplace { dir: PathBuf, files: Vec<String> },
    #[error(transparent)]
    Staging(#[from] crate::data::staging::StagingError),
    #[error(
        "stopped before the export was complete; nothing was written to {} (files of an earlier \
         export there are as they were)",
        .0.display()
    )]
    Stopped(PathBuf),
}

pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SourceError {
    let path = path.to_path_buf();
    move |source| SourceError::Io { op, path, source }
}

/// Before an export writes `files` into `out`: refused, naming those already there, unless
/// `replace`.
pub(crate) fn check_replace(out: &Path, files: &[&str], replace: bool) -> Result<(), SourceError> {
    let existing: Vec<String> = files
        .iter()
        .filter(|f| std::fs::symlink_metadata(out.join(f)).is_ok())
        .map(|f| f.to_string())
        .collect();
    if replace || existing.is_empty() {
        return Ok(());
    }
    Err(SourceError::WouldReplace {
        dir: out.to_path_buf(),
        files: existing,
    })
}

/// Writes an export of `files` into `out` as one set: `write` fills a staging folder, and the
/// files are renamed into `out` only once all of them are complete — `files[0]` (the config
/// other tools look for) last. A failed export, or one `stopped()` before it is published,
/// removes its staging folder; none leaves a file under a final name, and the files of an
/// earlier export (`--force`) stay intact until the new set is complete.
pub(crate) fn write_export(
    out: &Path,
    files: &[&str],
    replace: bool,
    stopped: &dyn Fn() -> bool,
    write: impl FnOnce(&Path) -> Result<(), SourceError>,
) -> Result<Vec<String>, SourceError> {
    check_replace(out, files, replace)?;
    if stopped() {
        return Err(SourceError::Stopped(out.to_path_buf()));
    }
    let staging = crate::data::staging::Staging::new(out, "export")?;
    write(staging.dir())?;
    if stopped() {
        return Err(SourceError::Stopped(out.to_path_buf()));
    }
    let mut order: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    order.rotate_left(1);
    staging.publish(&order)?;
    Ok(files.iter().map(|f| f.to_string()).collect())
}

/// A JSON config file; anything but an object (an array, a number) is refused rather than
/// read as "every key absent", which would give the defaults.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, SourceError> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    let bad = |reason: String| SourceError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    match serde_json::from_str(&text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(other) => Err(bad(format!(
            "must be a JSON object of settings, found {}",
            json_kind(&other)
        ))),
        Err(e) => Err(bad(format!("not valid JSON: {e}"))),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `key` of a JSON config: absent or null gives `empty`; present, it must be an object.
pub(crate) fn section<'a>(
    path: &Path,
    json: &'a serde_json::Value,
    key: &str,
    empty: &'a serde_json::Value,
) -> Result<&'a serde_json::Value, SourceError> {
    match json.get(key) {
        None | Some(serde_json::Value::Null) => Ok(empty),
        Some(v @ serde_json::Value::Object(_)) => Ok(v),
        Some(other) => Err(SourceError::BadConfig {
            path: path.to_path_buf(),
            reason: format!("{key} must be a JSON object, found {}", json_kind(other)),
        }),
    }
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), SourceError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(io("writing", path))
}

/// Per-channel image normalisation: (mean, std).
pub type MeanStd = ([f64; 3], [f64; 3]);

/// The three kinds of model folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A cliptrain checkpoint folder (a run folder is resolved to its newest checkpoint).
    Checkpoint,
    HuggingFace,
    OpenClip,
}

/// A model folder, read up to its weights (which [`ModelSource::tensors`] reads).
#[derive(Clone)]
pub struct ModelSource {
    pub kind: SourceKind,
    /// The folder the files are in (a run folder is resolved to its checkpoint).
    pub dir: PathBuf,
    /// The weights file: the folder's (safetensors preferred over a PyTorch file), or the one
    /// file the user named.
    pub weights: PathBuf,
    /// The model the folder holds. Its `eot_id` is the tokenizer's when there is one, else what
    /// the folder states (HF's and OpenCLIP's argmax pooling: the last id of the vocabulary).
    pub spec: ModelSpec,
    /// The tokenizer file: the folder's `tokenizer.json`, or a checkpoint's `data.tokenizer`.
    pub tokenizer_path: Option<PathBuf>,
    pub tokenizer: Option<Arc<TextTokenizer>>,
    /// The image normalisation the folder states.
    pub image_mean_std: Option<MeanStd>,
    /// The image resize the folder states (its processor's, or a checkpoint's keys).
    pub image_resize: Option<ResizeRule>,
    /// Optimizer steps a checkpoint was trained for; `None` for HF and OpenCLIP folders.
    pub step: Option<u64>,
    /// A checkpoint's saved `config.toml`.
    saved: Option<Config>,
    /// The caption cleaning an OpenCLIP folder states (`tokenizer_kwargs.clean`).
    text_clean: Option<crate::text::TextClean>,
    /// A PEFT adapter folder opened as its base: the LoRA matrices folded into the weights.
    adapter: Option<peft::PeftAdapter>,
}

impl std::fmt::Debug for ModelSource {
    // The tokenizer has no Debug; its path says which it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSource")
            .field("kind", &self.kind)
            .field("dir", &self.dir)
            .field("spec", &self.spec)
            .field("tokenizer_path", &self.tokenizer_path)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl ModelSource {
    /// Identifies the folder at `path` and reads its model description and tokenizer. A path
    /// written `hf:ORG/NAME[@REVISION]` is that model's snapshot folder in the Hugging Face
    /// cache, downloaded first when missing (see [`crate::hub`]). A path to one weights file
    /// (`finetuned.pt`, `epoch_3.pth`, another `.safetensors`) is read with the folder it is in,
    /// that file in place of the folder's own weights.
    ///
    /// A Hugging Face PEFT LoRA adapter folder (`adapter_config.json`) opens as its base model
    /// with the adapters folded into the weights (see [`peft`]).
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let path = &*crate::hub::locate(path)?;
        if !path.exists() {
            return Err(SourceError::Missing(path.to_path_buf()));
        }
        if path.is_dir() && peft::is_adapter_folder(path) {
            let (adapter, base) = peft::read(path)?;
            tracing::info!("{}: a LoRA adapter of {}", path.display(), base.display());
            let mut source = Self::open(&base)?;
            if source.adapter.is_some() {
                return Err(SourceError::BadConfig {
                    path: path.join(peft::CONFIG),
                    reason: format!("its base {} is itself an adapter", base.display()),
                });
            }
            source.adapter = Some(adapter);
            return Ok(source);
        }
        let d = describe(path)?;
        header::check(d.kind, &d.spec, &d.config_file(), &d.weights)?;
        let mut tokenizer_path = Some(d.dir.join("tokenizer.json"))
            .filter(|p| p.is_file())
            .or_else(|| crate::text::spm::find_in(&d.dir));
        if let (None, Some(saved)) = (&tokenizer_path, &d.saved) {
            tokenizer_path = Some(PathBuf::from(&saved.data.tokenizer)).filter(|p| p.is_file());
        }
        // A checkpoint's own data keys choose its specials; other folders state them in the
        // tokenizer files (tokenizer_config.json beside tokenizer.json).
        let ctx = d.spec.text.context_length;
        let mut opts = match &d.saved {
            Some(saved) => saved.data.tokenizer_options(ctx),
            None => TokenizerOptions::new(ctx),
        };
        // An OpenCLIP folder may say how its captions are cleaned (SigLIP's "canonicalize").
        let text_clean = match d.kind {
            SourceKind::OpenClip => openclip::read_text_clean(&d.config_file())?,
            _ => None,
        };
        opts.clean = text_clean.unwrap_or(opts.clean);
        let tokenizer = match &tokenizer_path {
            Some(p) => Some(Arc::new(TextTokenizer::load(p, &opts)?)),
            None => None,
        };
        let mut spec = d.spec;
        // The one end-of-text rule: the tokenizer's id wins over what the folder states.
        if let Some(tok) = &tokenizer {
            spec.eot_id = i64::from(tok.eot_id());
        }
        let step = match d.kind {
            SourceKind::Checkpoint => Some(checkpoint::read_state(&d.dir)?.step),
            _ => None,
        };
        Ok(Self {
            kind: d.kind,
            dir: d.dir,
            weights: d.weights,
            spec,
            tokenizer_path,
            tokenizer,
            image_mean_std: d.image_mean_std,
            image_resize: d.image_resize,
            step,
            saved: d.saved,
            text_clean,
            adapter: None,
        })
    }

    /// The checkpoint's moving average of the weights (`ema.safetensors`, written when it was
    /// trained with `optim.ema_decay`) in place of its weights: what `--ema` selects.
    pub fn with_ema_weights(mut self) -> Result<Self, SourceError> {
        let path = self.dir.join(checkpoint::EMA_WEIGHTS);
        if self.kind != SourceKind::Checkpoint || !path.is_file() {
            return Err(SourceError::NoEma(self.dir));
        }
        self.weights = path;
        Ok(self)
    }

    /// The weights file and its tensors under our (HF) names.
    pub fn tensors(&self) -> Result<(PathBuf, Vec<(String, Tensor)>), SourceError> {
        Ok(match self.kind {
            SourceKind::OpenClip => {
                let path = self.weights.clone();
                let tensors = read_weights(&path)?;
                let tensors = match self.spec.kind {
                    ModelKind::Siglip => timm_siglip::to_hf(tensors),
                    ModelKind::Clip => openclip::to_hf(tensors),
                };
                (path, tensors)
            }
            SourceKind::HuggingFace | SourceKind::Checkpoint => {
                let path = self.weights.clone();
                let tensors = read_weights(&path)?;
                (path, tensors)
            }
        })
        .and_then(|(path, tensors)| self.fold_adapters(path, tensors))
    }

    /// The weights with LoRA folded in: a checkpoint trained with `[finetune.lora]` holds its
    /// adapters beside the frozen weights; an adapter folder's come from its own file.
    fn fold_adapters(
        &self,
        path: PathBuf,
        mut tensors: Vec<(String, Tensor)>,
    ) -> Result<(PathBuf, Vec<(String, Tensor)>), SourceError> {
        if let Some(adapter) = &self.adapter {
            tensors.extend(adapter.tensors()?);
            let merged = crate::model::merge_adapters(tensors, adapter.scale, &adapter.weights)?;
            return Ok((adapter.weights.clone(), merged));
        }
        match self.saved.as_ref().and_then(|c| c.finetune.lora.as_ref()) {
            Some(lora) => {
                let merged = crate::model::merge_adapters(tensors, lora.scale(), &path)?;
                Ok((path, merged))
            }
            None => Ok((path, tensors)),
        }
    }

    /// Copies the weights into `vs` through the one strict loader (see
    /// [`crate::model::load_named`]).
    pub fn load_into(
        &self,
        vs: &mut nn::VarStore,
        mode: LoadMode,
    ) -> Result<LoadReport, SourceError> {
        let (path, tensors) = self.tensors()?;
        Ok(crate::model::load_named(vs, tensors, mode, &path)?)
    }

    /// The run config this model goes with: a checkpoint's own; for HF and OpenCLIP folders the
    /// defaults with the folder's model, head, tokenizer and normalisation applied.
    pub fn config(&self) -> Config {
        if let Some(saved) = &self.saved {
            return saved.clone();
        }
        let mut cfg = Config::default();
        cfg.loss.kind = self.spec.head.into();
        self.apply_to(&mut cfg);
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::{SourceError, write_export};

    /// An export stopped half-way (here: failing after one file) leaves the earlier export's
    /// files as they were and nothing else; a complete one replaces them, config last.
    #[test]
    fn an_export_reaches_its_final_names_only_complete() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("config.json"), "old").unwrap();
        let files = ["config.json", "model.safetensors"];
        let err = write_export(&out, &files, true, &|| false, |staging| {
            std::fs::write(staging.join("config.json"), "new").unwrap();
            assert_eq!(
                std::fs::read_to_string(out.join("config.json")).unwrap(),
                "old"
            );
            Err(SourceError::Unsupported("the disk filled up".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk filled"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the old config.json: {left:?}");
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "old"
        );

        let written = write_export(&out, &files, true, &|| false, |staging| {
            std::fs::write(staging.join("model.safetensors"), "weights").unwrap();
            std::fs::write(staging.join("config.json"), "new").unwrap();
            assert!(!out.join("model.safetensors").exists());
            Ok(())
        })
        .unwrap();
        assert_eq!(written, files);
        assert_eq!(
            std::fs::read_to_string(out.join("config.json")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
    }

    #[test]
    fn a_folder_without_a_tokenizer_names_the_files_it_would_read() {
        let dir = tempfile::tempdir().unwrap();
        let msg = SourceError::NoTokenizer(dir.path().into()).to_string();
        assert!(
            msg.contains(
                "has no tokenizer: put its tokenizer.json or SentencePiece model (spiece.model"
            ),
            "{msg}"
        );
    }
}

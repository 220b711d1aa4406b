//! Weights from and to the rest of the ecosystem: `model.init_from` sources (cliptrain
//! checkpoints, Hugging Face CLIP folders, OpenCLIP folders) and the `export` writers.
//!
//! Every name map lives here: HF names are ours ([`crate::model`] spells them), [`openclip`]
//! maps OpenCLIP's state-dict names onto them and back, [`hf`] reads and writes HF's
//! `config.json` and processor files.
pub mod hf;
pub mod openclip;

use crate::checkpoint;
use crate::config::{self, Config, ModelConfig};
use crate::model::{MismatchReport, ShapeMismatch};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

/// Why weights could not be imported or exported.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error(
        "{}: not a weights source; model.init_from takes a cliptrain checkpoint or run folder \
         (state.json / latest), a Hugging Face CLIP folder (config.json + model.safetensors) or an \
         OpenCLIP folder (open_clip_config.json + open_clip_model.safetensors)",
        .0.display()
    )]
    UnknownSource(PathBuf),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Tensor {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("{}: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error(
        "{} does not fit the model (set model.init_strict = false to load what fits):{report}",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        report: MismatchReport,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Unsupported(String),
}

pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InteropError {
    let path = path.to_path_buf();
    move |source| InteropError::Io { op, path, source }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, InteropError> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    serde_json::from_str(&text).map_err(|e| InteropError::BadConfig {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), InteropError> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(io("writing", path))
}

pub(crate) fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, InteropError> {
    Tensor::read_safetensors(path).map_err(|source| InteropError::Tensor {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<(), InteropError> {
    let owned: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&owned, path).map_err(|source| InteropError::Tensor {
        path: path.to_path_buf(),
        source,
    })
}

/// Per-channel image normalisation: (mean, std).
pub type MeanStd = ([f64; 3], [f64; 3]);

/// The kind of folder `model.init_from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A cliptrain checkpoint folder (already resolved from a run folder).
    Checkpoint,
    HuggingFace,
    OpenClip,
}

/// A weights source, read up to its tensors (which [`InitSource::load_into`] reads).
#[derive(Debug, Clone)]
pub struct InitSource {
    pub kind: SourceKind,
    /// The folder the files are in (a run folder is resolved to its checkpoint).
    pub dir: PathBuf,
    /// The source's model dimensions.
    pub model: ModelConfig,
    /// Its `tokenizer.json`, when it has one.
    pub tokenizer: Option<PathBuf>,
    /// Its image normalisation, when it states one.
    pub image_mean_std: Option<MeanStd>,
}

impl InitSource {
    /// Identifies and reads the folder at `path`.
    pub fn open(path: &Path) -> Result<Self, InteropError> {
        let tokenizer = |dir: &Path| {
            let t = dir.join("tokenizer.json");
            t.is_file().then_some(t)
        };
        if path.join(openclip::CONFIG).is_file() {
            let (model, mean_std) = openclip::read_config(&path.join(openclip::CONFIG))?;
            return Ok(Self {
                kind: SourceKind::OpenClip,
                dir: path.to_path_buf(),
                model,
                tokenizer: tokenizer(path),
                image_mean_std: mean_std,
            });
        }
        if path.join("config.json").is_file() && path.join("model.safetensors").is_file() {
            let model = hf::read_config(&path.join("config.json"))?;
            return Ok(Self {
                kind: SourceKind::HuggingFace,
                dir: path.to_path_buf(),
                model,
                tokenizer: tokenizer(path),
                image_mean_std: hf::read_preprocessor(path)?,
            });
        }
        let dir =
            checkpoint::resolve(path).map_err(|_| InteropError::UnknownSource(path.into()))?;
        let saved = read_checkpoint_config(&dir)?;
        Ok(Self {
            kind: SourceKind::Checkpoint,
            tokenizer: tokenizer(&dir),
            image_mean_std: Some((saved.data.image_mean, saved.data.image_std)),
            model: saved.model,
            dir,
        })
    }

    /// Makes `cfg` describe the source's model: its dimensions replace the TOML model section,
    /// its tokenizer fills an empty `data.tokenizer`, its normalisation replaces
    /// `data.image_mean/std`. Returns one line per value that changed, for the log.
    pub fn apply_to(&self, cfg: &mut Config) -> Vec<String> {
        let mut notes = Vec::new();
        let mut model = self.model.clone();
        model.init_from = cfg.model.init_from.clone();
        model.init_strict = cfg.model.init_strict;
        let (old, new) = (toml_lines(&cfg.model), toml_lines(&model));
        for (key, value) in &new {
            if old.get(key) != Some(value) {
                let was = old.get(key).map(String::as_str).unwrap_or("unset");
                notes.push(format!(
                    "model.{key} = {value} (from the source; config had {was})"
                ));
            }
        }
        cfg.model = model;
        if let Some(tok) = &self.tokenizer {
            if cfg.data.tokenizer.is_empty() {
                cfg.data.tokenizer = tok.display().to_string();
                notes.push(format!("data.tokenizer = {}", tok.display()));
            } else if Path::new(&cfg.data.tokenizer) != tok {
                notes.push(format!(
                    "data.tokenizer = {} is kept although the source has {}",
                    cfg.data.tokenizer,
                    tok.display()
                ));
            }
        }
        if let Some((mean, std)) = self.image_mean_std
            && (mean != cfg.data.image_mean || std != cfg.data.image_std)
        {
            cfg.data.image_mean = mean;
            cfg.data.image_std = std;
            notes.push(format!(
                "data.image_mean = {mean:?}, data.image_std = {std:?}"
            ));
        }
        notes
    }

    /// The source's weights under our (HF) names.
    pub fn tensors(&self) -> Result<(PathBuf, Vec<(String, Tensor)>), InteropError> {
        match self.kind {
            SourceKind::OpenClip => {
                let path = self.dir.join(openclip::WEIGHTS);
                Ok((path.clone(), openclip::to_hf(read_tensors(&path)?)))
            }
            SourceKind::HuggingFace | SourceKind::Checkpoint => {
                let path = self.dir.join("model.safetensors");
                Ok((path.clone(), read_tensors(&path)?))
            }
        }
    }

    /// Copies the source's weights into `vs`. Strict: every variable must be matched with its
    /// shape, or nothing is written and the error lists each problem. Not strict: what fits is
    /// copied and the rest is returned. HF and OpenCLIP CLIP models have no `logit_bias`, so a
    /// SigLIP model's bias keeps its init without counting as missing.
    pub fn load_into(
        &self,
        vs: &mut nn::VarStore,
        strict: bool,
    ) -> Result<LoadReport, InteropError> {
        let (path, tensors) = self.tensors()?;
        load_named(vs, tensors, strict, &path)
    }
}

/// What a non-strict load left out.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub skipped: MismatchReport,
}

/// Copies `tensors` (our names) into the variables of `vs`, per [`InitSource::load_into`].
pub fn load_named(
    vs: &mut nn::VarStore,
    tensors: Vec<(String, Tensor)>,
    strict: bool,
    path: &Path,
) -> Result<LoadReport, InteropError> {
    let file: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(n, _)| !n.ends_with("embeddings.position_ids"))
        .collect();
    let vars = vs.variables();
    let mut report = MismatchReport {
        missing: vars
            .keys()
            .filter(|n| !file.contains_key(*n) && n.as_str() != "logit_bias")
            .cloned()
            .collect(),
        unexpected: file
            .keys()
            .filter(|n| !vars.contains_key(*n))
            .cloned()
            .collect(),
        mismatched: vec![],
    };
    report.missing.sort();
    let mut fits = Vec::new();
    for (name, t) in &file {
        let Some(v) = vars.get(name) else { continue };
        if v.size() == t.size() {
            fits.push((v.shallow_clone(), t));
        } else {
            report.mismatched.push(ShapeMismatch {
                name: name.clone(),
                expected: v.size(),
                found: t.size(),
            });
        }
    }
    let clean =
        report.missing.is_empty() && report.unexpected.is_empty() && report.mismatched.is_empty();
    if strict && !clean {
        return Err(InteropError::Mismatch {
            path: path.to_path_buf(),
            report,
        });
    }
    tch::no_grad(|| {
        for (v, t) in &fits {
            v.shallow_clone().copy_(t);
        }
    });
    Ok(LoadReport {
        loaded: fits.len(),
        skipped: report,
    })
}

/// `key = value` lines of a model section, for reporting which values a source set.
fn toml_lines(m: &ModelConfig) -> BTreeMap<String, String> {
    let value = toml::Value::try_from(m).expect("ModelConfig serializes");
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The effective config saved in a checkpoint folder.
pub fn read_checkpoint_config(dir: &Path) -> Result<Config, InteropError> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
    config::load_str(&text, &[]).map_err(|e| InteropError::BadConfig {
        path,
        reason: e.to_string(),
    })
}

/// A cliptrain checkpoint as the exporters need it.
pub struct SavedModel {
    pub dir: PathBuf,
    pub config: Config,
    /// Weights by our (HF) name, sorted.
    pub tensors: Vec<(String, Tensor)>,
    pub tokenizer: Option<crate::text::TextTokenizer>,
}

impl SavedModel {
    /// Reads the checkpoint (or run folder's newest checkpoint) at `path`.
    pub fn open(path: &Path) -> Result<Self, InteropError> {
        let dir = checkpoint::resolve(path)?;
        let config = read_checkpoint_config(&dir)?;
        let mut tensors = read_tensors(&dir.join("model.safetensors"))?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.is_file() {
            Some(
                crate::text::TextTokenizer::from_file(&tok_path, config.model.text.context_length)
                    .map_err(|e| InteropError::BadConfig {
                        path: tok_path.clone(),
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            dir,
            config,
            tensors,
            tokenizer,
        })
    }

    /// The end-of-text id pooling uses: the tokenizer's, else the last id of the vocabulary.
    pub fn eot_id(&self) -> i64 {
        self.tokenizer
            .as_ref()
            .map(|t| i64::from(t.eot_id()))
            .unwrap_or(self.config.model.text.vocab_size as i64 - 1)
    }
}

/// Opens `cfg.model.init_from` when set and returns the config the run really uses: the
/// source's model dimensions (and tokenizer, normalisation) applied, each change logged, and
/// validated again.
pub fn prepare(cfg: &Config) -> Result<(Config, Option<InitSource>), InteropError> {
    if cfg.model.init_from.is_empty() {
        return Ok((cfg.clone(), None));
    }
    let path = Path::new(&cfg.model.init_from);
    let source = InitSource::open(path)?;
    let mut effective = cfg.clone();
    let notes = source.apply_to(&mut effective);
    tracing::info!(
        "model.init_from = {}: {:?} weights in {}",
        path.display(),
        source.kind,
        source.dir.display()
    );
    for note in &notes {
        tracing::info!("  taken from the source: {note}");
    }
    let problems = config::validate(&effective);
    if !problems.is_empty() {
        return Err(InteropError::BadConfig {
            path: path.to_path_buf(),
            reason: format!(
                "with the source's model the config is invalid:\n  {}",
                problems.join("\n  ")
            ),
        });
    }
    Ok((effective, Some(source)))
}

/// Loads `source` into `vs` (strict or not), logging what was loaded and what was left out.
pub fn init_weights(
    source: &InitSource,
    vs: &mut nn::VarStore,
    strict: bool,
) -> Result<LoadReport, InteropError> {
    let report = source.load_into(vs, strict)?;
    tracing::info!(
        "initialised {} tensors from {}",
        report.loaded,
        source.dir.display()
    );
    let s = &report.skipped;
    if !(s.missing.is_empty() && s.unexpected.is_empty() && s.mismatched.is_empty()) {
        tracing::warn!("model.init_strict = false: left at their random init or ignored:{s}");
    }
    Ok(report)
}

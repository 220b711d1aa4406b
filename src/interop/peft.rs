//! Hugging Face PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors` beside
//! (not containing) the base model they adapt.
//!
//! Reading: an adapter folder opens as its base model (`base_model_name_or_path`: a folder, or a
//! Hub id read as `hf:ID`) with the adapters folded into the weights, so `model.init_from`,
//! `eval`, `embed` and `export` take one like any model folder. Writing (`cliptrain export
//! peft`): a cliptrain LoRA checkpoint's adapters under PEFT's names, for
//! `PeftModel.from_pretrained(CLIPModel.from_pretrained(base), DIR)`. PEFT names a module's
//! matrices `base_model.model.{module}.lora_A.weight` in the file — ours without the prefix.
use super::{SourceError, SourceKind, io, read_json, write_json};
use crate::checkpoint;
use crate::model::{LoraConfig, is_adapter, peft_name};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const CONFIG: &str = "adapter_config.json";
pub const WEIGHTS: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// A PEFT LoRA adapter folder, read up to its weights.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// `adapter_model.safetensors`.
    pub weights: PathBuf,
    /// Every update's factor: `lora_alpha / r` (`/ √r` with `use_rslora`).
    pub scale: f64,
    /// `r`, which every `lora_A` must have as rows: a scale computed from another rank would
    /// fold in a silently wrong update.
    pub rank: i64,
}

/// Whether `dir` is a PEFT adapter folder.
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join(CONFIG).is_file()
}

/// Reads the adapter folder `dir`: the adapter, and where its base model is (a path for
/// [`super::ModelSource::open`], `hf:ID[@REV]` for a Hub id). What cliptrain cannot apply
/// exactly (DoRA, per-module ranks, trained biases, modules_to_save) is refused by name.
pub fn read(dir: &Path) -> Result<(PeftAdapter, PathBuf), SourceError> {
    let path = dir.join(CONFIG);
    let json = read_json(&path)?;
    let bad = |reason: String| SourceError::BadConfig {
        path: path.clone(),
        reason,
    };
    let peft_type = json.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(bad(format!(
            "peft_type is {peft_type:?}; cliptrain reads LoRA adapters (\"LORA\") only"
        )));
    }
    let positive = |key: &str| {
        json.get(key)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| bad(format!("{key} must be a number > 0")))
    };
    let (r, alpha) = (positive("r")?, positive("lora_alpha")?);
    let truthy = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    let non_empty = |key: &str| match json.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    for key in ["use_dora", "fan_in_fan_out"] {
        if truthy(key) {
            return Err(bad(format!(
                "{key} = true is not supported (plain LoRA only)"
            )));
        }
    }
    for key in ["rank_pattern", "alpha_pattern", "modules_to_save"] {
        if non_empty(key) {
            return Err(bad(format!(
                "{key} is set; cliptrain applies one rank and alpha to plain LoRA matrices only"
            )));
        }
    }
    if let Some(b) = json
        .get("bias")
        .and_then(Value::as_str)
        .filter(|b| *b != "none")
    {
        return Err(bad(format!(
            "bias = {b:?}: adapters that train biases are not supported (bias = \"none\" only)"
        )));
    }
    let scale = match truthy("use_rslora") {
        true => alpha / r.sqrt(),
        false => alpha / r,
    };
    let base = json
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            bad("base_model_name_or_path is missing: which model does it adapt?".into())
        })?;
    let revision = json.get("revision").and_then(Value::as_str);
    if r.fract() != 0.0 {
        return Err(bad(format!("r = {r} must be a whole number")));
    }
    let adapter = PeftAdapter {
        weights: dir.join(WEIGHTS),
        scale,
        rank: r as i64,
    };
    Ok((adapter, base_location(dir, base, revision)))
}

/// Where `base` is: a folder as written or relative to the adapter folder, else a Hub id.
fn base_location(dir: &Path, base: &str, revision: Option<&str>) -> PathBuf {
    let written = PathBuf::from(base);
    if written.exists() {
        return written;
    }
    if written.is_relative() && dir.join(&written).exists() {
        return dir.join(written);
    }
    let base = base.strip_prefix("hf:").unwrap_or(base);
    match revision.filter(|r| !r.is_empty() && *r != "main") {
        Some(rev) => PathBuf::from(format!("hf:{base}@{rev}")),
        None => PathBuf::from(format!("hf:{base}")),
    }
}

impl PeftAdapter {
    /// The adapter's LoRA matrices under our names; anything else in the file is refused.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>, SourceError> {
        let path = &self.weights;
        if !path.is_file() {
            return Err(SourceError::Missing(path.clone()));
        }
        let mut out = Vec::new();
        for (name, t) in checkpoint::read_tensors(path)? {
            match name.strip_prefix(PREFIX).filter(|n| is_adapter(n)) {
                Some(ours)
                    if ours.ends_with(".lora_A.weight") && t.size().first() != Some(&self.rank) =>
                {
                    return Err(SourceError::BadConfig {
                        path: path.clone(),
                        reason: format!(
                            "{name} has shape {:?}, but adapter_config.json says r = {}",
                            t.size(),
                            self.rank
                        ),
                    });
                }
                Some(ours) => out.push((ours.to_string(), t)),
                None => {
                    return Err(SourceError::BadConfig {
                        path: path.clone(),
                        reason: format!(
                            "{name} is not a LoRA matrix of the base model \
                             ({PREFIX}….lora_A.weight / lora_B.weight)"
                        ),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// `cliptrain export peft`: the LoRA checkpoint at `ckpt` (its `weights` file: the model's, or
/// its EMA's) as a PEFT adapter folder for its base model, `model.init_from`. Refused unless the
/// adapters are all the run changed: a run from random weights has no base to name, and a
/// trained tensor outside the adapters (an unlocked block, the temperature) is not something a
/// PEFT adapter carries. Returns the files written.
pub fn export(
    source: &super::ModelSource,
    out: &Path,
    replace: bool,
    stopped: &dyn Fn() -> bool,
) -> Result<Vec<String>, SourceError> {
    let refuse = |why: String| SourceError::Unsupported(format!("{}: {why}", source.dir.display()));
    let cfg = match (source.kind, &source.saved) {
        (SourceKind::Checkpoint, Some(cfg)) => cfg,
        _ => {
            return Err(refuse(
                "export peft writes the adapters of a cliptrain checkpoint trained with \
                 [finetune.lora]; this is not a cliptrain checkpoint"
                    .into(),
            ));
        }
    };
    let Some(lora) = &cfg.finetune.lora else {
        return Err(refuse(
            "the run had no [finetune.lora], so there are no adapters: export hf or openclip \
             writes its weights"
                .into(),
        ));
    };
    if cfg.model.init_from.is_empty() {
        return Err(refuse(
            "the run trained adapters on randomly initialised weights (no model.init_from), \
             which no base model holds: export hf writes the merged model"
                .into(),
        ));
    }
    let base = base_name(&cfg.model.init_from)?;
    let raw = checkpoint::read_tensors(&source.weights)?;
    if let Some((name, _)) = raw.iter().find(|(n, _)| {
        !is_adapter(n) && !crate::train::finetune::is_locked(&cfg.finetune, &cfg.model, n)
    }) {
        return Err(refuse(format!(
            "the run also trained {name}, which a PEFT adapter cannot carry: export hf or \
             openclip writes the merged model (or train with everything outside the adapters \
             locked, e.g. finetune.logit_scale = \"freeze\")"
        )));
    }
    let adapters: Vec<(String, Tensor)> = raw
        .into_iter()
        .filter(|(n, _)| is_adapter(n))
        .map(|(n, t)| (peft_name(&n), t))
        .collect();
    let config = adapter_config(lora, &base, &source.spec);
    let files = [CONFIG, WEIGHTS];
    super::write_export(out, &files, replace, stopped, |dir| {
        write_json(&dir.join(CONFIG), &config)?;
        checkpoint::write_tensors(&dir.join(WEIGHTS), &adapters)?;
        Ok(())
    })
}

/// `base_model_name_or_path` (and `revision`) for a run's `model.init_from`: a Hub id as PEFT
/// writes one, or the base folder's absolute path. The base must be a transformers model (PEFT
/// wraps one), which opening it tells.
fn base_name(init_from: &str) -> Result<(String, Option<String>), SourceError> {
    let base = super::ModelSource::open(Path::new(init_from))?;
    if base.kind != SourceKind::HuggingFace {
        return Err(SourceError::Unsupported(format!(
            "the run's base model {init_from} is {}, and a PEFT adapter adapts a Hugging Face \
             transformers folder: export hf writes the merged model instead",
            match base.kind {
                SourceKind::OpenClip => "an OpenCLIP model",
                _ => "a cliptrain checkpoint",
            }
        )));
    }
    if let Some(id) = crate::hub::parse(init_from)? {
        return Ok((id.repo, id.revision));
    }
    let path = Path::new(init_from);
    let abs = std::fs::canonicalize(path).map_err(io("finding the base model", path))?;
    Ok((abs.display().to_string(), None))
}

/// PEFT's `LoraConfig` for `lora` on a model with `spec`'s towers, every adapted module listed by
/// its full name (PEFT matches a list entry against the end of a module's name).
fn adapter_config(
    lora: &LoraConfig,
    (base, revision): &(String, Option<String>),
    spec: &crate::model::ModelSpec,
) -> Value {
    let modules = lora.modules(spec.vision.layers, spec.text.layers);
    json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base,
        "revision": revision,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "inference_mode": true,
    })
}

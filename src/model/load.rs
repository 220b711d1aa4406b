//! The one strict loader: named tensors (Hugging Face `CLIPModel` names) into a
//! [`tch::nn::VarStore`], every mismatch collected and reported at once.
//!
//! The VarStore's names are HF's names, so saving is plain `vs.save("model.safetensors")`.
//! Loading is stricter than `vs.load`: every missing, unexpected and mis-shaped name is listed
//! with its shapes, and each variable keeps its own dtype (tch's `load` would adopt the file's).
//! Resuming a run, `model.init_from`, evaluation, embedding and export all load through here.
use super::ModelError;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Tensor, nn};

/// Non-persistent HF buffers that some exports contain anyway; they are derived, not learned.
fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
}

/// Whether a load may leave variables out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Every variable must be matched with its shape, or nothing is written.
    Strict,
    /// What fits is copied; the rest keeps its init and is reported.
    Lenient,
}

/// What a load copied and what it left out.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Variables filled from the tensors.
    pub loaded: usize,
    /// What did not fit (empty after a strict load).
    pub skipped: MismatchReport,
}

/// Copies `tensors` into the variables of `vs`; `path` names their file in errors.
///
/// A `logit_bias` the tensors lack is not a mismatch in either mode: CLIP weights have none,
/// and a SigLIP model started from them keeps its initial bias. Nor are LoRA adapters
/// (`….lora_A.weight`) the tensors lack: a run that adds adapters to a model starts them at
/// their init (the identity update). HF's `position_ids` buffers are
/// ignored. In [`LoadMode::Strict`] any other difference fails with [`ModelError::Mismatch`]
/// listing every problem, and nothing is written.
pub fn load_named(
    vs: &mut nn::VarStore,
    tensors: Vec<(String, Tensor)>,
    mode: LoadMode,
    path: &Path,
) -> Result<LoadReport, ModelError> {
    let file: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(n, _)| !is_ignored_buffer(n))
        .collect();
    let vars = vs.variables();
    let mut report = MismatchReport {
        missing: vars
            .keys()
            .filter(|n| {
                !file.contains_key(*n) && n.as_str() != "logit_bias" && !super::is_adapter(n)
            })
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
    if mode == LoadMode::Strict && !report.is_empty() {
        return Err(ModelError::Mismatch {
            path: path.to_path_buf(),
            report,
        });
    }
    tch::no_grad(|| {
        for (v, t) in &fits {
            // copy_ converts dtype and device to the variable's.
            v.shallow_clone().copy_(t);
        }
    });
    Ok(LoadReport {
        loaded: fits.len(),
        skipped: report,
    })
}

/// One name whose shape differs between the model and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub name: String,
    pub expected: Vec<i64>,
    pub found: Vec<i64>,
}

/// Everything that keeps a checkpoint from matching a model, name by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MismatchReport {
    /// Model variables the file lacks.
    pub missing: Vec<String>,
    /// File tensors the model has no variable for.
    pub unexpected: Vec<String>,
    pub mismatched: Vec<ShapeMismatch>,
}

impl MismatchReport {
    /// Nothing missing, unexpected or mis-shaped.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for n in &self.missing {
            write!(f, "\n  missing in file: {n}")?;
        }
        for n in &self.unexpected {
            write!(f, "\n  unexpected in file: {n}")?;
        }
        for m in &self.mismatched {
            write!(
                f,
                "\n  shape of {}: model expects {:?}, file has {:?}",
                m.name, m.expected, m.found
            )?;
        }
        Ok(())
    }
}

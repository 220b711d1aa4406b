//! Strict loading of Hugging Face `CLIPModel` safetensors into a [`tch::nn::VarStore`].
//!
//! The VarStore's names are HF's names, so saving is plain `vs.save("model.safetensors")`.
//! Loading is stricter than `vs.load`: every mismatch is collected and reported at once, with
//! shapes, and each variable keeps its own dtype (tch's `load` would adopt the file's).
use super::ModelError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Tensor, nn};

/// Non-persistent HF buffers that some exports contain anyway; they are derived, not learned.
fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
}

/// Fills every variable of `vs` from the safetensors file at `path`, which must hold exactly
/// those names with the same shapes (HF's `position_ids` buffers are tolerated and ignored).
///
/// On any mismatch nothing is written and the error lists every missing, unexpected and
/// mis-shaped name.
pub fn load_hf_safetensors(vs: &mut nn::VarStore, path: &Path) -> Result<(), ModelError> {
    let read = Tensor::read_safetensors(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: BTreeMap<String, Tensor> = read
        .into_iter()
        .filter(|(n, _)| !is_ignored_buffer(n))
        .collect();
    let vars = vs.variables();
    let var_names: BTreeSet<&String> = vars.keys().collect();
    let missing: Vec<String> = var_names
        .iter()
        .filter(|n| !file.contains_key(n.as_str()))
        .map(|n| n.to_string())
        .collect();
    let unexpected: Vec<String> = file
        .keys()
        .filter(|n| !vars.contains_key(n.as_str()))
        .cloned()
        .collect();
    let mismatched: Vec<ShapeMismatch> = file
        .iter()
        .filter_map(|(n, t)| {
            let v = vars.get(n)?;
            (v.size() != t.size()).then(|| ShapeMismatch {
                name: n.clone(),
                expected: v.size(),
                found: t.size(),
            })
        })
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        return Err(ModelError::Mismatch {
            path: path.to_path_buf(),
            report: MismatchReport {
                missing,
                unexpected,
                mismatched,
            },
        });
    }
    tch::no_grad(|| {
        for (name, t) in &file {
            let mut v = vars[name].shallow_clone();
            // copy_ converts dtype and device to the variable's.
            v.copy_(t);
        }
    });
    Ok(())
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

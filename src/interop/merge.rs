//! WiSE-FT (Wortsman et al. 2022): the weights `(1 − α)·A + α·B` of two models of one
//! architecture — usually A the zero-shot model and B its fine-tuned copy, which keeps much of
//! A's robustness while gaining most of B's accuracy on the target task. Any two folders that
//! load (checkpoints, Hugging Face, OpenCLIP) merge; the architectures are compared key by key
//! and tensor by tensor before anything is computed.
use super::LoadedModel;
use crate::config::{ModelConfig, flat_keys};
use tch::Tensor;

/// Why two models do not merge, or an α that does not interpolate.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "{a} and {b} are different architectures, so their weights do not interpolate: {}",
        .differences.join("; ")
    )]
    Architecture {
        a: String,
        b: String,
        differences: Vec<String>,
    },
    #[error("alpha = {0} must be a number in [0, 1] (0 = the first model, 1 = the second)")]
    Alpha(f64),
}

/// The two models' parameters, kept as they were loaded so that several α can be applied.
pub struct WeightMerge {
    pairs: Vec<(String, Tensor, Tensor)>,
}

impl WeightMerge {
    /// Checks that `a` and `b` are one architecture (every model key, every tensor's name and
    /// shape) and keeps copies of both parameter sets.
    pub fn new(a: &LoadedModel, b: &LoadedModel) -> Result<Self, MergeError> {
        let mut differences = architecture_differences(a, b);
        let (ta, tb) = (a.named_tensors(), b.named_tensors());
        let shapes = |t: &[(String, Tensor)]| {
            t.iter()
                .map(|(n, t)| (n.clone(), t.size()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (sa, sb) = (shapes(&ta), shapes(&tb));
        for (name, shape) in &sa {
            match sb.get(name) {
                Some(other) if other != shape => differences.push(format!(
                    "tensor {name} is {shape:?} in the first, {other:?} in the second"
                )),
                None => differences.push(format!("tensor {name} is only in the first")),
                _ => {}
            }
        }
        for name in sb.keys().filter(|n| !sa.contains_key(*n)) {
            differences.push(format!("tensor {name} is only in the second"));
        }
        if !differences.is_empty() {
            differences.truncate(20);
            return Err(MergeError::Architecture {
                a: a.source.dir.display().to_string(),
                b: b.source.dir.display().to_string(),
                differences,
            });
        }
        let pairs = ta
            .into_iter()
            .zip(tb)
            .map(|((name, x), (_, y))| (name, x.detach().copy(), y.detach().copy()))
            .collect();
        Ok(Self { pairs })
    }

    /// Writes `(1 − alpha)·A + alpha·B` into `into`'s parameters (a model of the same
    /// architecture, normally A itself). α = 0 and 1 give A's and B's tensors exactly.
    pub fn apply(&self, alpha: f64, into: &LoadedModel) -> Result<(), MergeError> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(MergeError::Alpha(alpha));
        }
        let mut vars = into.vs.variables();
        tch::no_grad(|| {
            for (name, x, y) in &self.pairs {
                let merged = if alpha == 0.0 {
                    x.shallow_clone()
                } else if alpha == 1.0 {
                    y.shallow_clone()
                } else {
                    x * (1.0 - alpha) + y * alpha
                };
                let var = vars.get_mut(name).expect("checked: same names");
                var.copy_(&merged);
            }
        });
        Ok(())
    }
}

/// Every model key (`model.vision.width`, `model.activation`, ...) on which the two differ, and
/// the logit head; the tokenizer's end id is not architecture.
fn architecture_differences(a: &LoadedModel, b: &LoadedModel) -> Vec<String> {
    let keys = |m: &LoadedModel| {
        let mut spec = m.source.spec.clone();
        spec.eot_id = 0;
        let mut keys = flat_keys(&ModelConfig::default().with_dims_of(&spec));
        keys.insert("head".into(), format!("{:?}", spec.head));
        keys
    };
    let (ka, kb) = (keys(a), keys(b));
    ka.iter()
        .filter_map(|(k, va)| {
            let vb = kb.get(k).map_or("unset", String::as_str);
            (va != vb).then(|| format!("model.{k} = {va} in the first, {vb} in the second"))
        })
        .collect()
}

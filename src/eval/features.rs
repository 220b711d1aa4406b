//! Frozen image features of a labelled set for probes (`eval linear-probe`, `eval knn`):
//! encoded once per (model, set, preprocessing) and cached as safetensors, so a sweep over
//! weight decays, shot counts or k re-encodes nothing.
use super::batches::{EvalImages, Want};
use super::probe::Features;
use super::{Encoder, EvalError, ZeroShotTask};
use crate::data::stream::stable_hash;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How a set's features were obtained.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Extraction {
    pub samples: usize,
    /// Read from the cache instead of encoded.
    pub cached: bool,
    /// Images per second of reading, decoding and encoding (0 when cached).
    pub images_per_s: f64,
    pub skipped: String,
}

/// Where features are cached: one safetensors file per (model, set, preprocessing).
#[derive(Debug, Clone)]
pub struct FeatureCache {
    pub dir: PathBuf,
    /// Identifies the model's weights (see [`model_key`]).
    pub model: String,
}

impl FeatureCache {
    fn path(&self, spec: &str, classes: usize, prep: &EvalImages) -> PathBuf {
        let key = format!(
            "{}\0{spec}\0{classes}\0{}\0{:?}\0{:?}\0{}",
            self.model, prep.size, prep.mean, prep.std, prep.max_pixels
        );
        self.dir.join(format!("{}.safetensors", stable_hash(&key)))
    }
}

/// A key that changes whenever the weights in `folder` do: its canonical path and every
/// file's name, length and modification time (the weights are not hashed: that would read
/// gigabytes to save re-encoding a few thousand images).
pub fn model_key(folder: &Path) -> String {
    let folder = folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf());
    let mut parts = vec![folder.display().to_string()];
    if let Ok(entries) = std::fs::read_dir(&folder) {
        let mut files: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let modified = m
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                m.is_file().then(|| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    format!("{name}:{}:{}", m.len(), modified.as_nanos())
                })
            })
            .collect();
        files.sort();
        parts.extend(files);
    }
    stable_hash(&parts.join("\0"))
}

/// The L2-normalised image features and labels of the labelled set of `task` (shards with
/// `.cls`, an ImageFolder or a CLIP_benchmark split), from `cache` when it has them.
pub fn labelled_features(
    task: &ZeroShotTask,
    enc: &Encoder,
    prep: &EvalImages,
    cache: Option<&FeatureCache>,
) -> Result<(Features, Extraction), EvalError> {
    let (spec, classnames) = (&task.data, &task.classnames);
    if task.is_multilabel() {
        return Err(EvalError::Input(format!(
            "{spec}: a multilabel set has no single class per image for a probe; use a \
             classification set"
        )));
    }
    let path = cache.map(|c| c.path(spec, classnames.len(), prep));
    if let Some(f) = path
        .as_deref()
        .and_then(|p| read_cached(p, classnames.len()))
    {
        let samples = f.len();
        let extraction = Extraction {
            samples,
            cached: true,
            images_per_s: 0.0,
            skipped: String::new(),
        };
        return Ok((f, extraction));
    }
    let started = Instant::now();
    let mut batches = task.batches(Want::Labels, enc, prep)?;
    let pixels = prep.pixel_norm(enc.device());
    let (mut parts, mut labels) = (Vec::new(), Vec::new());
    while let Some(b) = batches.next_batch()? {
        let c = classnames.len() as i64;
        if let Some((key, bad)) = b
            .keys
            .iter()
            .zip(&b.labels)
            .find(|(_, l)| !(0..c).contains(*l))
        {
            return Err(EvalError::Input(format!(
                "{spec}: sample {key} has label {bad}, but there are {c} class names; use the \
                 classnames file the set was made with"
            )));
        }
        parts.push(enc.images(&b.images, &pixels)?.to_device(Device::Cpu));
        labels.extend(b.labels);
    }
    if labels.is_empty() {
        return Err(EvalError::Input(format!(
            "{spec}: no usable labelled sample (skipped: {})",
            batches.skipped()
        )));
    }
    let f = Features {
        x: Tensor::cat(&parts, 0).to_kind(Kind::Float),
        y: labels,
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(p) = &path {
        // A cache that cannot be written costs a re-encode next time, nothing else.
        if let Err(e) = write_cached(p, &f) {
            tracing::warn!("cannot cache features in {}: {e}", p.display());
        }
    }
    let extraction = Extraction {
        samples: f.len(),
        cached: false,
        images_per_s: f.len() as f64 / seconds.max(1e-9),
        skipped: batches.skipped().to_string(),
    };
    Ok((f, extraction))
}

/// The cached features at `path`, if present and consistent (anything else re-encodes).
fn read_cached(path: &Path, classes: usize) -> Option<Features> {
    let tensors = Tensor::read_safetensors(path).ok()?;
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let (x, y) = (get("features")?, get("labels")?);
    let y = Vec::<i64>::try_from(y).ok()?;
    let ok = x.dim() == 2
        && x.size()[0] == y.len() as i64
        && y.iter().all(|&l| (0..classes as i64).contains(&l));
    if !ok {
        tracing::warn!(
            "{} is not a usable feature cache; encoding again",
            path.display()
        );
        return None;
    }
    tracing::info!("features from the cache {}", path.display());
    Some(Features {
        x: x.shallow_clone(),
        y,
    })
}

/// Written to a temporary file and renamed, so a killed run never leaves half a cache.
fn write_cached(path: &Path, f: &Features) -> Result<(), String> {
    let dir = path.parent().ok_or("no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let tensors = [
        ("features", f.x.shallow_clone()),
        ("labels", Tensor::from_slice(&f.y)),
    ];
    Tensor::write_safetensors(&tensors, &tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

//! Where evaluation images come from: WebDataset shards (read once, in order, through the
//! training data layer with the eval transform), an ImageFolder tree `DIR/<class>/*`, or a
//! CLIP_benchmark folder (see [`super::benchmark`]).
use super::EvalError;
use super::benchmark::{BenchmarkBatches, BenchmarkSet, is_benchmark_dir};
use crate::data::buffers::HostMemory;
use crate::data::loader::{Loader, LoaderOptions, Tokenize};
use crate::data::pixels::{PixelNorm, hwc_to_chw};
use crate::data::resize::ResizeRule;
use crate::data::sample::SampleKeys;
use crate::data::spec::parse_spec;
use crate::data::stream::{ShardStream, StreamOptions};
use crate::data::transform::{Augment, ImageTransform};
use crate::data::{SkipCounts, SkipReason};
use fast_image_resize::Resizer;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};

/// How evaluation images are prepared: the model's input size and normalisation.
#[derive(Debug, Clone)]
pub struct EvalImages {
    pub size: u32,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub batch_size: usize,
    pub workers: usize,
    pub image_keys: SampleKeys,
    /// Images whose header claims more pixels are skipped (`data.max_image_pixels`).
    pub max_pixels: u64,
    /// The model's resize to its input (`data.image_resize*`, from its folder).
    pub resize: ResizeRule,
}

impl EvalImages {
    /// The model's eval transform at its size (CLIP's: shorter side resized, centre crop).
    pub(crate) fn transform(&self) -> ImageTransform {
        ImageTransform {
            size: self.size,
            augment: Augment::Eval(self.resize),
            max_pixels: self.max_pixels,
            seed: 0,
        }
    }

    /// The normalisation of these images' u8 batches, on `device`.
    pub fn pixel_norm(&self, device: Device) -> PixelNorm {
        PixelNorm::new(self.mean, self.std, device)
    }
}

/// A batch of evaluation samples.
pub struct EvalBatch {
    /// `[n, 3, S, S]` u8, RGB, on the CPU: [`EvalImages::pixel_norm`] normalises it on the
    /// model's device.
    pub images: Tensor,
    pub keys: Vec<String>,
    /// Class index of each sample (classification sets).
    pub labels: Vec<i64>,
    /// Every caption of each sample (retrieval sets).
    pub captions: Vec<Vec<String>>,
    /// One flag per class for each sample (multilabel sets).
    pub multi_hot: Vec<Vec<bool>>,
}

/// Batches from shards or a folder, and what was skipped on the way.
pub enum EvalBatches {
    Shards { loader: Loader, skipped: SkipCounts },
    Folder(FolderBatches),
    Benchmark(BenchmarkBatches),
}

/// What the evaluation needs from each sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want {
    /// An integer class label (`.cls`, or the folder name).
    Labels,
    /// All captions of the sample.
    Captions,
    /// Nothing but the image (embedding a collection).
    Images,
    /// A set of classes per sample (CLIP_benchmark multilabel sets only).
    MultiLabels,
}

impl EvalBatches {
    /// The samples of one split of a CLIP_benchmark folder; `classes` is the width of
    /// multilabel vectors.
    pub fn benchmark(
        set: &BenchmarkSet,
        want: Want,
        classes: usize,
        prep: &EvalImages,
    ) -> Result<Self, EvalError> {
        Ok(Self::Benchmark(BenchmarkBatches::new(
            set, want, classes, prep,
        )?))
    }

    /// `spec` is a directory (CLIP_benchmark folder, its `test` split; or an ImageFolder,
    /// labels from `classnames`) or a shard spec.
    pub fn open(
        spec: &str,
        want: Want,
        prep: &EvalImages,
        classnames: &[String],
        tokenizer: Arc<dyn Tokenize>,
    ) -> Result<Self, EvalError> {
        if is_benchmark_dir(Path::new(spec)) {
            let set = BenchmarkSet::open(Path::new(spec), "test")?;
            return Self::benchmark(&set, want, classnames.len(), prep);
        }
        if Path::new(spec).is_dir() {
            match want {
                Want::Labels => {}
                Want::MultiLabels => {
                    return Err(EvalError::Input(format!(
                        "{spec} is an ImageFolder; multilabel sets are read from CLIP_benchmark \
                         folders (dataset_type.txt = multilabel)"
                    )));
                }
                Want::Captions => {
                    return Err(EvalError::Input(format!(
                        "{spec} is a folder; retrieval needs captioned shards (KEY.jpg + KEY.txt), \
                         e.g. made by `cliptrain data build`"
                    )));
                }
                Want::Images => {
                    return Err(EvalError::Input(format!(
                        "{spec} is a folder; name WebDataset shards (e.g. \"photos-{{000..009}}.tar\"), \
                         as `cliptrain data build` writes them"
                    )));
                }
            }
            return Ok(Self::Folder(FolderBatches::new(
                Path::new(spec),
                classnames,
                prep,
            )?));
        }
        if want == Want::MultiLabels {
            return Err(EvalError::Input(format!(
                "{spec}: multilabel sets are read from CLIP_benchmark folders (DIR with \
                 dataset_type.txt = multilabel and DIR/test/nshards.txt), not from a shard list"
            )));
        }
        let shards = parse_spec(spec)?;
        let stream = ShardStream::new(shards, StreamOptions::once())?;
        let keys = SampleKeys {
            label: want == Want::Labels,
            all_captions: want == Want::Captions,
            image_only: want == Want::Images,
            ..prep.image_keys.clone()
        };
        let opts = LoaderOptions {
            batch_size: prep.batch_size,
            transform: prep.transform(),
            keys,
            workers: prep.workers,
            prefetch: 2,
            // Evaluation copies each batch synchronously (it is not on the training hot path).
            memory: HostMemory::Pageable,
        };
        Ok(Self::Shards {
            loader: Loader::start(stream, tokenizer, opts)?,
            skipped: SkipCounts::default(),
        })
    }

    pub fn next_batch(&mut self) -> Result<Option<EvalBatch>, EvalError> {
        match self {
            Self::Shards { loader, skipped } => {
                let Some(b) = loader.next_batch()? else {
                    return Ok(None);
                };
                *skipped = b.skipped.clone();
                Ok(Some(EvalBatch {
                    images: b.images,
                    keys: b.keys,
                    labels: b.labels.unwrap_or_default(),
                    captions: b.caption_sets.unwrap_or_default(),
                    multi_hot: Vec::new(),
                }))
            }
            Self::Folder(f) => f.next_batch(),
            Self::Benchmark(b) => b.next_batch(),
        }
    }

    /// Samples skipped so far, by reason.
    pub fn skipped(&self) -> &SkipCounts {
        match self {
            Self::Shards { skipped, .. } => skipped,
            Self::Folder(f) => &f.skipped,
            Self::Benchmark(b) => &b.skipped,
        }
    }
}

/// torchvision's ImageFolder: one sub-folder per class, named as the class (underscores may
/// stand for spaces), images inside. Labels follow the classnames file, not folder order, so
/// the same classifier scores shards and folders alike.
pub struct FolderBatches {
    files: Vec<(PathBuf, i64)>,
    next: usize,
    prep: EvalImages,
    pool: rayon::ThreadPool,
    skipped: SkipCounts,
}

impl FolderBatches {
    fn new(dir: &Path, classnames: &[String], prep: &EvalImages) -> Result<Self, EvalError> {
        let io = |e: std::io::Error| EvalError::Input(format!("reading {}: {e}", dir.display()));
        let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = classnames.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(EvalError::Input(format!(
                "class \"{dup}\" appears twice in the class names; an ImageFolder labels images by \
                 folder name, so each class must be listed once"
            )));
        }
        let mut files = Vec::new();
        let mut unknown = Vec::new();
        for class_dir in &class_dirs {
            let name = class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let label = classnames
                .iter()
                .position(|c| *c == name || *c == name.replace('_', " "));
            let Some(label) = label else {
                unknown.push(name);
                continue;
            };
            let mut images: Vec<PathBuf> = std::fs::read_dir(class_dir)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            images.sort();
            files.extend(images.into_iter().map(|p| (p, label as i64)));
        }
        if !unknown.is_empty() {
            return Err(EvalError::Input(format!(
                "{}: class folder(s) {} match no line of the classnames file; name each folder \
                 as its class (spaces may be written as underscores)",
                dir.display(),
                unknown.join(", ")
            )));
        }
        if files.is_empty() {
            return Err(EvalError::Input(format!(
                "{} holds no images: an ImageFolder is DIR/<class name>/<image files>",
                dir.display()
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(prep.workers.max(1))
            .build()
            .map_err(|e| EvalError::Input(e.to_string()))?;
        Ok(Self {
            files,
            next: 0,
            prep: prep.clone(),
            pool,
            skipped: SkipCounts::default(),
        })
    }

    fn next_batch(&mut self) -> Result<Option<EvalBatch>, EvalError> {
        let p = &self.prep;
        let transform = p.transform();
        let plane = (p.size * p.size) as usize;
        loop {
            if self.next >= self.files.len() {
                return Ok(None);
            }
            let end = (self.next + p.batch_size).min(self.files.len());
            let chunk = &self.files[self.next..end];
            self.next = end;
            let decoded: Vec<Result<Vec<u8>, SkipReason>> = self.pool.install(|| {
                chunk
                    .par_iter()
                    .map_init(Resizer::new, |rs, (path, _)| {
                        let bytes =
                            std::fs::read(path).map_err(|_| SkipReason::UndecodableImage)?;
                        let rgb = transform.apply(&bytes, 0, rs)?;
                        let mut chw = vec![0u8; 3 * plane];
                        hwc_to_chw(&rgb, &mut chw);
                        Ok(chw)
                    })
                    .collect()
            });
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * plane);
            let (mut keys, mut labels) = (Vec::new(), Vec::new());
            for ((path, label), r) in chunk.iter().zip(decoded) {
                match r {
                    Ok(chw) => {
                        pixels.extend_from_slice(&chw);
                        keys.push(path.display().to_string());
                        labels.push(*label);
                    }
                    Err(reason) => {
                        tracing::debug!("skipping {}: {}", path.display(), reason.as_str());
                        self.skipped.add(reason);
                    }
                }
            }
            if labels.is_empty() {
                continue;
            }
            let s = p.size as i64;
            return Ok(Some(EvalBatch {
                images: Tensor::from_slice(&pixels).view([labels.len() as i64, 3, s, s]),
                keys,
                labels,
                captions: Vec::new(),
                multi_hot: Vec::new(),
            }));
        }
    }
}

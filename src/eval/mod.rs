//! Evaluation: zero-shot classification (single- and multi-label), image-text retrieval and
//! suites of them, standalone (`cliptrain eval`) and during training. Reads shards, ImageFolders
//! and CLIP_benchmark folders; reuses the data layer (eval transform) and the model; never
//! changes parameters.
pub mod batches;
pub mod benchmark;
pub mod features;
pub mod metrics;
pub mod multilabel;
pub mod npy;
pub mod probe;
pub mod prompts;
pub mod report;
pub mod retrieval;
pub mod suite;
pub mod zeroshot;

use crate::config::{Config, EvalConfig, Precision};
use crate::data::loader::{NoTokens, Tokenize};
use crate::data::pixels::PixelNorm;
use crate::data::sample::SampleKeys;
use crate::log::Metrics;
use crate::model::ClipModel;
use crate::precision::Autocast;
use crate::text::TextTokenizer;
pub use batches::EvalImages;
use std::path::PathBuf;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

pub use multilabel::MultiLabelReport;
pub use retrieval::RetrievalReport;
pub use suite::{Suite, SuiteResults};
pub use zeroshot::{ZeroShotReport, ZeroShotTask};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file or sample the user gave is unusable; the message says which and what to do.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Text(#[from] crate::text::TextError),
    #[error(transparent)]
    Precision(#[from] crate::precision::PrecisionError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Embeds images and texts with a model: batched, without autograd, under the run's autocast.
/// Built by [`Encoder::new`], or from a loaded model folder by
/// [`LoadedModel::encoder`](crate::interop::LoadedModel::encoder).
pub struct Encoder<'a> {
    model: &'a ClipModel,
    /// The tokenizer for texts, or why there is none: a model folder without a tokenizer
    /// still encodes images, and only a text refuses, with that reason.
    tokenizer: Result<Arc<TextTokenizer>, String>,
    device: Device,
    precision: Precision,
    batch_size: usize,
}

impl<'a> Encoder<'a> {
    /// Encodes with `model` (whose parameters are on `device`) and `tokenizer`, `batch_size`
    /// texts at a time, under `precision`'s autocast — [`Precision::inference_default`] when
    /// `None`.
    pub fn new(
        model: &'a ClipModel,
        tokenizer: Arc<TextTokenizer>,
        device: Device,
        precision: Option<Precision>,
        batch_size: usize,
    ) -> Self {
        Self::with_text(model, Ok(tokenizer), device, precision, batch_size)
    }

    /// [`Encoder::new`] for a model that may have no tokenizer: `tokenizer` is it, or the
    /// error (naming the model's folder) that encoding a text gives.
    pub fn with_text(
        model: &'a ClipModel,
        tokenizer: Result<Arc<TextTokenizer>, String>,
        device: Device,
        precision: Option<Precision>,
        batch_size: usize,
    ) -> Self {
        Self {
            model,
            tokenizer,
            device,
            precision: precision.unwrap_or(Precision::inference_default(device)),
            batch_size: batch_size.max(1),
        }
    }

    /// The device the model is on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The autocast precision it encodes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `[n, dim]` L2-normalised float32 image embeddings of u8 `images` (normalised by
    /// `pixels`, on the model's device), on the model's device.
    pub fn images(&self, images: &Tensor, pixels: &PixelNorm) -> Result<Tensor, EvalError> {
        let _ac = Autocast::enter(self.device, self.precision)?;
        Ok(tch::no_grad(|| {
            let pixels = pixels.apply(&images.to_device(self.device));
            let e = self.model.encode_image(&pixels);
            crate::model::l2_normalize(&e.to_kind(Kind::Float))
        }))
    }

    /// `[texts.len(), dim]` L2-normalised float32 text embeddings, in batches.
    pub fn texts(&self, texts: &[String]) -> Result<Tensor, EvalError> {
        let tokenizer = self.text_tokenizer()?;
        let ctx = tokenizer.context_length() as i64;
        let mut parts = Vec::new();
        for chunk in texts.chunks(self.batch_size.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let ids = tokenizer.encode_batch(&refs)?;
            let tokens = Tensor::from_slice(&ids)
                .view([chunk.len() as i64, ctx])
                .to_device(self.device);
            let _ac = Autocast::enter(self.device, self.precision)?;
            parts.push(tch::no_grad(|| {
                let e = self.model.encode_text(&tokens);
                crate::model::l2_normalize(&e.to_kind(Kind::Float))
            }));
        }
        if parts.is_empty() {
            return Err(EvalError::Input("no text to embed".into()));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    /// The tokenizer it encodes texts with, or the error that a model without one gives.
    pub fn text_tokenizer(&self) -> Result<&Arc<TextTokenizer>, EvalError> {
        self.tokenizer
            .as_ref()
            .map_err(|why| EvalError::Input(why.clone()))
    }

    /// What the evaluation loaders tokenize captions with: the tokenizer, or none for a model
    /// without one (the loaders' token ids are never encoded: texts go through [`Self::texts`]).
    pub fn tokenizer(&self) -> Arc<dyn Tokenize> {
        match &self.tokenizer {
            Ok(t) => t.clone(),
            Err(_) => Arc::new(NoTokens),
        }
    }
}

/// How a config's model wants its evaluation images.
pub fn eval_images(cfg: &Config, batch_size: usize, workers: usize) -> EvalImages {
    EvalImages {
        size: cfg.model.vision.image_size as u32,
        mean: cfg.data.image_mean,
        std: cfg.data.image_std,
        batch_size,
        workers,
        image_keys: SampleKeys::from_config(&cfg.data),
        max_pixels: cfg.data.max_image_pixels,
        resize: cfg.data.resize_rule(),
    }
}

/// The evaluation sets of a run's `[eval]` section, prepared once (files read and checked at
/// the start, so a typo fails the run before training, not hours in).
pub struct Evaluator {
    zeroshot: Option<ZeroShotTask>,
    retrieval: Option<String>,
    suite: Option<Suite>,
    prep: EvalImages,
    pub every: u64,
}

/// What one evaluation during training produced.
#[derive(Debug, Clone)]
pub struct EvalResults {
    pub zeroshot: Option<ZeroShotReport>,
    pub retrieval: Option<RetrievalReport>,
    /// `[eval] suite`: the suite and what each of its tasks gave.
    pub suite: Option<(Suite, SuiteResults)>,
}

impl Evaluator {
    /// `None` when the config names no evaluation set.
    pub fn from_config(cfg: &Config) -> Result<Option<Self>, EvalError> {
        let e: &EvalConfig = &cfg.eval;
        if e.zeroshot.is_empty() && e.retrieval.is_empty() && e.suite.is_empty() {
            return Ok(None);
        }
        let opt_path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let zeroshot = if e.zeroshot.is_empty() {
            None
        } else {
            Some(ZeroShotTask::resolve(
                &e.zeroshot,
                "test",
                opt(&e.classnames).as_deref(),
                opt(&e.templates).as_deref(),
                opt_path(&e.classes_subset).as_deref(),
            )?)
        };
        if zeroshot.as_ref().is_some_and(ZeroShotTask::is_multilabel) {
            return Err(EvalError::Input(format!(
                "[eval] zeroshot = {:?} is a multilabel set; run it from a suite (eval.suite, a \
                 task with kind = \"multilabel\"), which reports its mean average precision",
                e.zeroshot
            )));
        }
        let suite = opt_path(&e.suite).map(|p| Suite::load(&p)).transpose()?;
        for spec in [&e.zeroshot, &e.retrieval] {
            if !spec.is_empty() && !std::path::Path::new(spec).is_dir() {
                crate::data::spec::parse_spec(spec)?;
            }
        }
        let workers = crate::runtime::cpu_threads(cfg.run.threads, "run.threads");
        Ok(Some(Self {
            zeroshot,
            retrieval: opt_path(&e.retrieval).map(|_| e.retrieval.clone()),
            suite,
            prep: eval_images(cfg, e.batch_size, workers),
            every: e.every,
        }))
    }

    pub fn run(&self, enc: &Encoder) -> Result<EvalResults, EvalError> {
        Ok(EvalResults {
            zeroshot: match &self.zeroshot {
                Some(t) => Some(t.run(enc, &self.prep)?),
                None => None,
            },
            retrieval: match &self.retrieval {
                Some(spec) => Some(retrieval::run(spec, "test", enc, &self.prep)?),
                None => None,
            },
            suite: self
                .suite
                .as_ref()
                .map(|s| (s.clone(), s.run(enc, &self.prep))),
        })
    }
}

impl EvalResults {
    /// Flat scalars for TensorBoard and metrics.jsonl.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        if let Some(z) = &self.zeroshot {
            for (name, g) in &z.metrics.groups {
                let prefix = if name == "all" {
                    "zeroshot".to_string()
                } else {
                    format!("zeroshot_{name}")
                };
                m.insert(format!("{prefix}_top1"), g.top1);
                m.insert(format!("{prefix}_top5"), g.top5);
                m.insert(
                    format!("{prefix}_mean_per_class_recall"),
                    g.mean_per_class_recall,
                );
            }
        }
        if let Some(r) = &self.retrieval {
            for (k, v) in &r.metrics.image_to_text {
                m.insert(
                    format!("retrieval_image_to_text_{}", k.replace('@', "_at_")),
                    *v,
                );
            }
            for (k, v) in &r.metrics.text_to_image {
                m.insert(
                    format!("retrieval_text_to_image_{}", k.replace('@', "_at_")),
                    *v,
                );
            }
        }
        // A failed task simply has no figures; its error was logged when it ran.
        for (task, r) in self.suite.iter().flat_map(|(_, r)| r) {
            if let Ok(f) = r {
                for (metric, v, _) in &f.values {
                    m.insert(suite::metric_name(task, metric), *v);
                }
            }
        }
        m
    }
}

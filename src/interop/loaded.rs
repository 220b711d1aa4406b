//! A [`ModelSource`] built into a [`ClipModel`] on a device and strictly loaded: what `eval`,
//! `embed`, `search` and `export` work with.
use super::{ModelSource, SourceError};
use crate::config::Precision;
use crate::eval::{Encoder, EvalImages};
use crate::model::{ClipModel, LoadMode};
use crate::text::TextTokenizer;
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Tensor, nn};

/// A model read back from any of the three kinds of folder, ready to encode.
pub struct LoadedModel {
    /// Where it came from: kind, folder, spec, tokenizer, step, config.
    pub source: ModelSource,
    pub model: ClipModel,
    /// Owns the parameters `model` refers to.
    pub vs: nn::VarStore,
}

impl LoadedModel {
    /// Opens the folder at `path` and loads its model onto `device`.
    pub fn open(path: &Path, device: Device) -> Result<Self, SourceError> {
        Self::open_weights(path, device, false)
    }

    /// [`LoadedModel::open`], with a checkpoint's EMA weights instead of its weights when
    /// `ema` (see [`ModelSource::with_ema_weights`]).
    pub fn open_weights(path: &Path, device: Device, ema: bool) -> Result<Self, SourceError> {
        let source = ModelSource::open(path)?;
        match ema {
            true => source.with_ema_weights()?.load(device),
            false => source.load(device),
        }
    }

    /// The tokenizer that encodes text for this model; an error naming the folder when it has
    /// none.
    pub fn tokenizer(&self) -> Result<Arc<TextTokenizer>, SourceError> {
        self.source
            .tokenizer
            .clone()
            .ok_or_else(|| SourceError::NoTokenizer(self.source.dir.clone()))
    }

    /// An [`Encoder`] of this model, `batch_size` texts at a time, in `precision` (bf16 on
    /// CUDA and fp32 on the CPU when `None`: [`Precision::inference_default`]); an error naming
    /// the folder when it has no tokenizer.
    pub fn encoder(
        &self,
        precision: Option<Precision>,
        batch_size: usize,
    ) -> Result<Encoder<'_>, SourceError> {
        Ok(Encoder::new(
            &self.model,
            self.tokenizer()?,
            self.vs.device(),
            precision,
            batch_size,
        ))
    }

    /// How this model wants its evaluation images (its size, normalisation and resize), loaded
    /// `batch_size` at a time by `workers` decode threads.
    pub fn eval_images(&self, batch_size: usize, workers: usize) -> EvalImages {
        crate::eval::eval_images(&self.source.config(), batch_size, workers)
    }

    /// Every parameter by name, sorted, as the loaded model holds it.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
}

impl ModelSource {
    /// Builds the model this source describes on `device` and fills it strictly: every tensor
    /// must be there with its shape.
    pub fn load(self, device: Device) -> Result<LoadedModel, SourceError> {
        let mut vs = nn::VarStore::new(device);
        let model = ClipModel::new(&vs.root(), &self.spec)?;
        self.load_into(&mut vs, LoadMode::Strict)?;
        Ok(LoadedModel {
            source: self,
            model,
            vs,
        })
    }
}

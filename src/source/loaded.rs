//! A [`ModelSource`] built into a [`ClipModel`] on a device and strictly loaded: what `eval`,
//! `embed`, `search` and `export` work with.
use super::{ModelSource, SourceError};
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
        ModelSource::open(path)?.load(device)
    }

    /// The tokenizer that encodes text for this model; an error naming the folder when it has
    /// none.
    pub fn tokenizer(&self) -> Result<Arc<TextTokenizer>, SourceError> {
        self.source
            .tokenizer
            .clone()
            .ok_or_else(|| SourceError::NoTokenizer(self.source.dir.clone()))
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

//! Image↔text retrieval over captioned shards: every image against every caption (several per
//! image when the shards have them), Recall@1/5/10 in both directions.
use super::metrics::{RetrievalMetrics, retrieval_recall};
use super::source::{EvalBatches, EvalImages, Want};
use super::{Encoder, EvalError};
use serde::Serialize;
use tch::Tensor;

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    #[serde(flatten)]
    pub metrics: RetrievalMetrics,
    pub data: String,
    pub skipped: crate::data::SkipCounts,
}

pub fn run(spec: &str, enc: &Encoder, prep: &EvalImages) -> Result<RetrievalReport, EvalError> {
    let mut batches = EvalBatches::open(spec, Want::Captions, prep, &[], enc.tokenizer())?;
    let (mut images, mut captions, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    let mut n_images = 0usize;
    let pixels = prep.pixel_norm(enc.device);
    while let Some(b) = batches.next_batch()? {
        images.push(enc.images(&b.images, &pixels)?);
        for set in b.captions {
            owner.extend(std::iter::repeat_n(n_images, set.len()));
            captions.extend(set);
            n_images += 1;
        }
    }
    if n_images == 0 {
        return Err(EvalError::Input(format!(
            "{spec}: no usable captioned sample (skipped: {})",
            batches.skipped()
        )));
    }
    let images = Tensor::cat(&images, 0);
    let texts = enc.texts(&captions)?;
    Ok(RetrievalReport {
        metrics: retrieval_recall(&images, &texts, &owner),
        data: spec.to_string(),
        skipped: batches.skipped().clone(),
    })
}

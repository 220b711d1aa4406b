//! Image↔text retrieval over captioned shards: every image against every caption (several per
//! image when the shards have them), Recall@1/5/10 in both directions.
use super::batches::{EvalBatches, EvalImages, Want};
use super::benchmark::{BenchmarkSet, SetKind, is_benchmark_dir};
use super::metrics::{RetrievalMetrics, retrieval_recall};
use super::{Encoder, EvalError};
use serde::Serialize;
use std::path::Path;
use tch::Tensor;

/// A finished retrieval evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    #[serde(flatten)]
    pub metrics: RetrievalMetrics,
    pub data: String,
    pub skipped: crate::data::SkipCounts,
}

/// Retrieval over `spec`: captioned shards, or the `split` of a CLIP_benchmark retrieval folder
/// (captions one per line in `KEY.txt`).
pub fn run(
    spec: &str,
    split: &str,
    enc: &Encoder,
    prep: &EvalImages,
) -> Result<RetrievalReport, EvalError> {
    // The captions are encoded last: a model without a tokenizer is refused before any image.
    enc.text_tokenizer()?;
    let (mut batches, data) = if is_benchmark_dir(Path::new(spec)) {
        let set = BenchmarkSet::open(Path::new(spec), split)?;
        if set.kind != SetKind::Retrieval {
            return Err(EvalError::Input(format!(
                "{spec}: a {} set (dataset_type.txt is not \"retrieval\"); evaluate it with \
                 `cliptrain eval zeroshot`",
                if set.kind == SetKind::Multilabel {
                    "multilabel"
                } else {
                    "classification"
                }
            )));
        }
        (
            EvalBatches::benchmark(&set, Want::Captions, 0, prep)?,
            set.describe(),
        )
    } else {
        (
            EvalBatches::open(spec, Want::Captions, prep, &[], enc.tokenizer())?,
            spec.to_string(),
        )
    };
    let (mut images, mut captions, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    let mut n_images = 0usize;
    let pixels = prep.pixel_norm(enc.device());
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
            "{data}: no usable captioned sample (skipped: {})",
            batches.skipped()
        )));
    }
    let images = Tensor::cat(&images, 0);
    let texts = enc.texts(&captions)?;
    Ok(RetrievalReport {
        metrics: retrieval_recall(&images, &texts, &owner),
        data,
        skipped: batches.skipped().clone(),
    })
}

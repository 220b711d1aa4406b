//! Multi-label zero-shot classification (CLIP_benchmark's `multilabel` sets, e.g. VOC 2007):
//! the same prompt classifier as single-label zero-shot, every class scored for every image,
//! mean average precision over classes.
use super::batches::{EvalImages, Want};
use super::metrics::{MultiLabelMetrics, multilabel_map};
use super::zeroshot::ZeroShotTask;
use super::{Encoder, EvalError};
use serde::Serialize;

/// A finished multilabel evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct MultiLabelReport {
    #[serde(flatten)]
    pub metrics: MultiLabelMetrics,
    pub data: String,
    pub templates: usize,
    pub skipped: crate::data::SkipCounts,
}

impl ZeroShotTask {
    /// Scores every image of a multilabel set against every class; mAP over classes.
    pub fn run_multilabel(
        &self,
        enc: &Encoder,
        prep: &EvalImages,
    ) -> Result<MultiLabelReport, EvalError> {
        let classifier = self.classifier(enc)?;
        let mut batches = self.batches(Want::MultiLabels, enc, prep)?;
        let pixels = prep.pixel_norm(enc.device());
        let (mut scores, mut targets) = (Vec::<f32>::new(), Vec::new());
        while let Some(b) = batches.next_batch()? {
            let s = enc.images(&b.images, &pixels)?.matmul(&classifier.tr());
            let s = s.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu);
            scores.extend(Vec::<f32>::try_from(s.contiguous().view([-1]))?);
            targets.extend(b.multi_hot);
        }
        if targets.is_empty() {
            return Err(EvalError::Input(format!(
                "{}: no usable multilabel sample (skipped: {})",
                self.data,
                batches.skipped()
            )));
        }
        Ok(MultiLabelReport {
            metrics: multilabel_map(&scores, &targets, &self.classnames),
            data: self.data.clone(),
            templates: self.templates.len(),
            skipped: batches.skipped().clone(),
        })
    }
}

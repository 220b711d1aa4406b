//! `[data]`: where the training samples come from and how they become tensors.
use super::{CaptionChoice, DataMode, ImageResize, Interpolation, ResizeRule, TextClean};
use crate::data::augment::AugmentConfig;
use crate::text::TokenizerOptions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[data]`: the WebDataset shards and how samples become tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training shards: brace expansion, several specs joined by `::`, `pipe:` commands.
    pub train: String,
    /// Instead of `train`: a weighted mixture, each source its own shard stream (resampled
    /// mode only); every sample comes from a source chosen in proportion to the weights.
    pub sources: Vec<MixtureEntry>,
    pub mode: DataMode,
    /// Image member extensions, first present wins, `;`-separated (webdataset's convention).
    pub image_keys: String,
    /// Caption member extension.
    pub text_key: String,
    /// When non-empty, the caption is this field of the sample's `json` member instead.
    pub json_caption_field: String,
    /// Which caption training reads when a sample has several: "first" or "random" (drawn per
    /// sample and epoch).
    pub caption_choice: CaptionChoice,
    /// Several fields of the `json` member, each drawn with its probability (they sum to 1), as
    /// OpenCLIP's `--json-text-key-probs`: `{ caption = 0.7, synthetic = 0.3 }`. A field missing
    /// from a sample leaves the draw to the others; a field holding a list gives one item.
    pub caption_fields: BTreeMap<String, f64>,
    /// Hugging Face `tokenizer.json` (trained by `cliptrain tokenizer train`, or CLIP's own
    /// from `scripts/make_clip_tokenizer.py`); required for training.
    pub tokenizer: String,
    /// The start-of-row token: empty = the tokenizer's (its post-processor, else the
    /// `bos_token` of a `tokenizer_config.json` / `special_tokens_map.json` beside it, else
    /// CLIP's `<|startoftext|>`); `"none"` = rows have no start token (SigLIP's tokenizers).
    pub sot_token: String,
    /// The end-of-row token (`eot` pooling pools at it); empty = the tokenizer's, found as
    /// `sot_token` is (`eos_token`, CLIP's `<|endoftext|>`).
    pub eot_token: String,
    /// The token rows are padded with; empty = id 0 for CLIP's BPE (open_clip's rows), else the
    /// file's padding, else the `pad_token` beside it, else id 0.
    pub pad_token: String,
    /// Caption cleaning before the tokenizer: `auto` (`clip` for CLIP's BPE, else
    /// `whitespace`), `clip`, `whitespace` or `canonicalize` (open_clip's clean functions).
    pub text_clean: TextClean,
    /// Samples held in the shuffle buffer; 0 or 1 disables sample shuffling.
    pub shuffle_buffer: usize,
    /// Decode/augment threads; 0 = `run.threads`.
    pub workers: usize,
    /// Ready batches queued ahead of the training loop.
    pub prefetch: usize,
    /// Random resized crop area range, as fractions of the image.
    pub crop_scale: [f64; 2],
    /// Class-labelled training data (FLYP): one class name per line (line i = label i) or
    /// `builtin:NAME`. When set, each sample's caption is made from its `.cls` label and a
    /// template; the text members are not read.
    pub classnames: String,
    /// With `classnames`: one template per line with `{}` for the class name, or
    /// `builtin:NAME`; empty = cliptrain's generic photo templates. One is drawn per sample.
    pub templates: String,
    /// `[data.augment]`: the crop's aspect ratios, flips, colour jitter, grayscale, erasing.
    pub augment: AugmentConfig,
    /// Per-channel normalisation (CLIP's by default).
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    /// How evaluation images are resized to the model's input: `shortest` (the shorter side,
    /// then a centre crop; CLIP's), `longest` (the longer side, then padded with `image_fill`)
    /// or `squash` (the whole image to the square; SigLIP's). A model folder states its own.
    pub image_resize: ImageResize,
    /// The resize's size before the crop; 0 = `model.vision.image_size` (e.g. 256 for a
    /// processor that resizes to 256 and crops 224).
    pub image_resize_size: u32,
    /// Resampling filter, for training crops too: `bicubic`, `bilinear` or `lanczos` (PIL's).
    pub image_interpolation: Interpolation,
    /// Gray level (0–255) of the padding `longest` adds.
    pub image_fill: u8,
    /// Images whose header claims more pixels are refused (decompression bombs).
    pub max_image_pixels: u64,
    /// A shard file of `train` that does not exist stops the run instead of being skipped with
    /// a warning.
    pub strict: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: String::new(),
            sources: Vec::new(),
            mode: DataMode::Epoch,
            image_keys: "jpg;jpeg;png;webp".into(),
            text_key: "txt".into(),
            json_caption_field: String::new(),
            caption_choice: CaptionChoice::First,
            caption_fields: BTreeMap::new(),
            tokenizer: String::new(),
            sot_token: String::new(),
            eot_token: String::new(),
            pad_token: String::new(),
            text_clean: TextClean::Auto,
            shuffle_buffer: 1000,
            workers: 0,
            prefetch: 4,
            crop_scale: [0.9, 1.0],
            classnames: String::new(),
            templates: String::new(),
            augment: AugmentConfig::default(),
            image_mean: [0.48145466, 0.4578275, 0.40821073],
            image_std: [0.26862954, 0.26130258, 0.27577711],
            image_resize: ImageResize::Shortest,
            image_resize_size: 0,
            image_interpolation: Interpolation::Bicubic,
            image_fill: 0,
            // PIL's Image.MAX_IMAGE_PIXELS, so we refuse what Python pipelines refuse.
            max_image_pixels: 89_478_485,
            strict: false,
        }
    }
}

impl DataConfig {
    /// How training images are cropped and augmented (see [`crate::data::augment`]).
    pub fn train_augment(&self) -> crate::data::transform::Augment {
        let fill = self
            .image_mean
            .map(|m| (m * 255.0).round().clamp(0.0, 255.0) as u8);
        crate::data::transform::Augment::Train {
            scale: self.crop_scale,
            filter: self.image_interpolation,
            augment: self.augment,
            fill,
        }
    }

    /// The evaluation resize these keys state.
    pub fn resize_rule(&self) -> ResizeRule {
        ResizeRule {
            mode: self.image_resize,
            size: self.image_resize_size,
            filter: self.image_interpolation,
            fill: self.image_fill,
        }
    }

    /// The tokenizer choices of this section, for rows of `context_length` ids: every place a
    /// tokenizer is loaded for a run (training, eval, export, the `tokenizer` commands) uses
    /// these, so the keys apply everywhere.
    pub fn tokenizer_options(&self, context_length: usize) -> TokenizerOptions {
        TokenizerOptions {
            context_length,
            sot_token: self.sot_token.clone(),
            eot_token: self.eot_token.clone(),
            pad_token: self.pad_token.clone(),
            clean: self.text_clean,
        }
    }
}

/// One `[[data.sources]]` entry of a mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureEntry {
    /// Optional label, used in messages and reports.
    #[serde(default)]
    pub name: String,
    /// The source's shards, in the syntax of `data.train`.
    pub train: String,
    /// Relative share of the samples (> 0); weights need not sum to 1.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

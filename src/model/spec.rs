//! What a model is, apart from any run: each tower's dimensions, the shared activation and
//! LayerNorm eps, the end-of-text id the text tower pools at, and the logit head.
//!
//! The tower configs are also the `[model.vision]` / `[model.text]` sections of a run config
//! (`config` re-exports them), so a TOML file deserializes straight into what the towers take.
//! A run config converts into a [`ModelSpec`]; the Hugging Face and OpenCLIP readers build one
//! directly.
use super::ModelError;
use serde::{Deserialize, Serialize};

/// The MLP activation of both towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, as OpenAI's CLIP.
    QuickGelu,
    Gelu,
}

/// `[model.vision]`: the Vision Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// MLP hidden width = `mlp_ratio * width`.
    pub mlp_ratio: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            image_size: 224,
            patch_size: 32,
            width: 768,
            layers: 12,
            heads: 12,
            mlp_ratio: 4.0,
        }
    }
}

/// `[model.text]`: the causal text Transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    pub vocab_size: usize,
    /// Tokens per caption, start and end tokens included.
    pub context_length: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            context_length: 77,
            width: 512,
            layers: 12,
            heads: 8,
            mlp_ratio: 4.0,
        }
    }
}

/// How image-text similarities become logits: CLIP scales them, SigLIP also adds a learned bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitHead {
    /// `exp(logit_scale) · cos`; `logit_scale` starts at `ln(1/0.07)`.
    Clip,
    /// `exp(logit_scale) · cos + logit_bias`; they start at `ln 10` and −10 (SigLIP's init).
    Siglip,
}

impl LogitHead {
    /// The initial value of the `logit_scale` variable (the log of the temperature).
    pub fn logit_scale_init(self) -> f64 {
        match self {
            Self::Clip => (1.0f64 / 0.07).ln(),
            Self::Siglip => 10f64.ln(),
        }
    }

    /// The initial `logit_bias`; `None` when the head has no bias variable.
    pub fn logit_bias_init(self) -> Option<f64> {
        match self {
            Self::Clip => None,
            Self::Siglip => Some(-10.0),
        }
    }
}

/// Everything [`super::ClipModel::new`] needs to build a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Dimension of the joint image-text embedding space.
    pub embed_dim: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// The tokenizer's end-of-text id (49407 for CLIP's BPE): text pooling takes the first
    /// position holding it.
    pub eot_id: i64,
    pub head: LogitHead,
}

impl ModelSpec {
    /// Refuses dimensions that cannot make a working network, naming the value.
    pub fn validate(&self) -> Result<(), ModelError> {
        let (v, t) = (&self.vision, &self.text);
        let bad = |m: String| Err(ModelError::Config(m));
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        for (tower, width, heads) in [("vision", v.width, v.heads), ("text", t.width, t.heads)] {
            if heads == 0 || width % heads != 0 {
                return bad(format!(
                    "{tower} width {width} is not divisible by {heads} heads"
                ));
            }
        }
        if self.eot_id < 0 || self.eot_id as usize >= t.vocab_size {
            return bad(format!(
                "end-of-text id {} is outside the vocabulary of {}",
                self.eot_id, t.vocab_size
            ));
        }
        Ok(())
    }
}

/// MLP hidden width of a tower exactly as the model builds it.
pub fn mlp_width(width: usize, ratio: f64) -> usize {
    (width as f64 * ratio).round() as usize
}

//! What a model is, apart from any run: its architecture (CLIP or SigLIP), each tower's
//! dimensions, the shared activation and LayerNorm eps, the end-of-text id the text tower pools
//! at, and the logit head.
//!
//! The tower configs are also the `[model.vision]` / `[model.text]` sections of a run config
//! (`config` re-exports them), so a TOML file deserializes straight into what the towers take.
//! A run config converts into a [`ModelSpec`]; the Hugging Face and OpenCLIP readers build one
//! directly.
use super::ModelError;
use serde::{Deserialize, Serialize};

/// An MLP activation (`model.activation` for both towers, `model.text.activation` to give the
/// text tower another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, as OpenAI's CLIP.
    QuickGelu,
    Gelu,
    /// GELU's tanh approximation (HF's `gelu_pytorch_tanh`), as SigLIP.
    GeluTanh,
}

/// `model.kind`: which architecture the towers have, each named as its Hugging Face model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// HF `CLIPModel`: a class token and pre-LayerNorm in the ViT, a causal text tower pooled at
    /// the end-of-text token, and two bias-free projections into the joint space.
    #[default]
    Clip,
    /// HF `SiglipModel`: a ViT without class token or pre-LayerNorm (patch embedding with bias)
    /// pooled by a multi-head attention head, a bidirectional text tower pooled at its last
    /// position and projected by `text_model.head`, and a `logit_bias`. The joint space is the
    /// vision width (`embed_dim` must equal `model.vision.width`).
    Siglip,
}

impl ModelKind {
    /// The TOML spelling, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Siglip => "siglip",
        }
    }
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
    /// FLIP's patch dropout: the fraction of patch tokens a training forward pass drops (a
    /// random subset per image, the class token always kept); evaluation, embedding and export
    /// never drop. A training choice, not an architecture: exports leave it out, and
    /// `model.init_from` keeps the run's value.
    pub patch_dropout: f64,
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
            patch_dropout: 0.0,
        }
    }
}

/// Which position's feature stands for the whole caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPooling {
    /// The first end-of-text token (HF's `eos_token_id` pooling; OpenCLIP's `eos`).
    #[default]
    Eot,
    /// The last position of the row (OpenCLIP's `last`).
    Last,
    /// The position of the largest id (OpenAI's and OpenCLIP's `argmax`): the end token when it
    /// is the vocabulary's largest id, as in CLIP's BPE.
    Argmax,
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
    /// The text tower's MLP activation where it differs from `model.activation`; absent, the
    /// text tower uses `model.activation`. (OpenCLIP's SigLIP 2 runs its text tower with GELU's
    /// tanh approximation and its timm image tower with exact GELU.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// Where the caption's feature is taken (see [`TextPooling`]).
    pub pooling: TextPooling,
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
            activation: None,
            pooling: TextPooling::Eot,
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
    /// The architecture: CLIP or SigLIP.
    pub kind: ModelKind,
    /// Dimension of the joint image-text embedding space.
    pub embed_dim: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// The tokenizer's end-of-text id (49407 for CLIP's BPE): `eot` text pooling takes the
    /// first position holding it.
    pub eot_id: i64,
    pub head: LogitHead,
}

impl ModelSpec {
    /// Refuses dimensions that cannot make a working network, naming each value.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut problems = self.dim_problems();
        let vocab = self.text.vocab_size;
        if self.eot_id < 0 || self.eot_id as usize >= vocab {
            problems.push(format!(
                "the end-of-text id {} must be inside model.text.vocab_size = {vocab}",
                self.eot_id
            ));
        }
        if self.kind == ModelKind::Siglip && self.head != LogitHead::Siglip {
            problems.push(
                "model.kind = \"siglip\" has a logit_bias, which only the sigmoid loss trains: \
                 it needs loss.kind = \"siglip\""
                    .into(),
            );
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ModelError::Config(problems.join("; "))),
        }
    }

    /// Every broken dimension rule, one `model.<key> = value must <rule>` message each: the
    /// rules of a TOML `[model]` section, applied the same to a model read from any folder.
    pub fn dim_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut at_least = |key: &str, value: usize, min: usize| {
            if value < min {
                p.push(format!("model.{key} = {value} must be at least {min}"));
            }
        };
        let (v, t) = (&self.vision, &self.text);
        at_least("embed_dim", self.embed_dim, 1);
        at_least("vision.patch_size", v.patch_size, 1);
        at_least("vision.image_size", v.image_size, 1);
        // The start and end tokens alone take two slots.
        at_least("text.context_length", t.context_length, 2);
        at_least("text.vocab_size", t.vocab_size, 3);
        for (tower, width, layers, heads) in [
            ("vision", v.width, v.layers, v.heads),
            ("text", t.width, t.layers, t.heads),
        ] {
            at_least(&format!("{tower}.layers"), layers, 1);
            at_least(&format!("{tower}.heads"), heads, 1);
            at_least(&format!("{tower}.width"), width, 1);
        }
        if v.patch_size > 0 && v.image_size > 0 && v.image_size % v.patch_size != 0 {
            p.push(format!(
                "model.vision.image_size = {} must be divisible by model.vision.patch_size = {}",
                v.image_size, v.patch_size
            ));
        }
        for (tower, width, heads, ratio) in [
            ("vision", v.width, v.heads, v.mlp_ratio),
            ("text", t.width, t.heads, t.mlp_ratio),
        ] {
            if heads > 0 && width > 0 && width % heads != 0 {
                p.push(format!(
                    "model.{tower}.width = {width} must be divisible by model.{tower}.heads = {heads}"
                ));
            }
            if !(ratio.is_finite() && ratio > 0.0) {
                p.push(format!(
                    "model.{tower}.mlp_ratio = {ratio} must be a finite number > 0"
                ));
            }
        }
        let pd = v.patch_dropout;
        if !(pd.is_finite() && (0.0..1.0).contains(&pd)) {
            p.push(format!(
                "model.vision.patch_dropout = {pd} must be in [0, 1) (the fraction of patch \
                 tokens dropped in training; 0 = off)"
            ));
        }
        if self.kind == ModelKind::Siglip && self.embed_dim != v.width {
            p.push(format!(
                "model.embed_dim = {} must equal model.vision.width = {} with model.kind = \
                 \"siglip\" (its attention-pooling head outputs the vision width)",
                self.embed_dim, v.width
            ));
        }
        let eps = self.layer_norm_eps;
        if !(eps.is_finite() && eps > 0.0) {
            p.push(format!(
                "model.layer_norm_eps = {eps} must be a finite number > 0"
            ));
        }
        p
    }

    /// How many numbers the model's parameters hold (as f64: a hostile spec may overflow any
    /// integer), for memory estimates before anything is allocated.
    pub fn param_count(&self) -> f64 {
        let (v, t, e) = (&self.vision, &self.text, self.embed_dim as f64);
        let blocks = |width: usize, layers: usize, ratio: f64| {
            let (w, m) = (width as f64, (width as f64 * ratio).round());
            // q, k, v, out projections with biases, two LayerNorms, the MLP's two layers.
            layers as f64 * (4.0 * (w * w + w) + 4.0 * w + 2.0 * w * m + m + w)
        };
        let (vw, p) = (v.width as f64, v.patch_size as f64);
        let patches = (v.image_size as f64 / p.max(1.0)).powi(2) + 1.0;
        let tw = t.width as f64;
        // Patch embedding, class token or patch bias, positions, two LayerNorms; projections.
        let mut vision = vw * 3.0 * p * p + vw + patches * vw + 4.0 * vw + vw * e;
        let mut text = (t.vocab_size + t.context_length) as f64 * tw + 2.0 * tw + tw * e;
        if self.kind == ModelKind::Siglip {
            // The attention-pooling head (probe, attention, LayerNorm, MLP) instead of a
            // projection, no class-token position and no pre-LayerNorm; the text head's bias.
            // (Checked against transformers' SiglipModel: 184,578 for tests/suite/siglip.rs's model.)
            let m = (vw * v.mlp_ratio).round();
            let head = vw + 4.0 * (vw * vw + vw) + 2.0 * vw + 2.0 * vw * m + m + vw;
            vision += head - vw * e - 3.0 * vw;
            text += e;
        }
        let towers =
            blocks(v.width, v.layers, v.mlp_ratio) + blocks(t.width, t.layers, t.mlp_ratio);
        vision + text + towers + 2.0
    }
}

/// MLP hidden width of a tower exactly as the model builds it.
pub fn mlp_width(width: usize, ratio: f64) -> usize {
    (width as f64 * ratio).round() as usize
}

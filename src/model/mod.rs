//! The CLIP model: a ViT image tower and a causal text tower projected into one embedding space
//! — or, with [`ModelKind::Siglip`], SigLIP's towers (attention-pooled ViT, bidirectional text,
//! each ending in its own head) with a logit bias.
//!
//! Every variable is created under nested [`nn::Path`]s that spell Hugging Face `CLIPModel`'s
//! (or `SiglipModel`'s) state-dict names and layouts, so `vs.save("model.safetensors")` is an HF
//! checkpoint and [`load_named`] reads one back (or an HF-trained model) unchanged.
//! Initialisation follows OpenCLIP for CLIP and HF's `SiglipModel` for SigLIP. The model knows nothing of runs: it is built from a [`ModelSpec`], and owns no
//! training logic: the losses take [`ClipModel::encode_image`] / [`ClipModel::encode_text`]
//! features and [`ClipModel::logit_scale`], the optimizer [`no_weight_decay`].
//! [`ClipModel::forward`] returns HF's `CLIPOutput` ([`ClipOutput`]) for parity checks against
//! `transformers`.
mod load;
mod lora;
mod patch_dropout;
mod pooling_head;
mod spec;
mod text;
mod transformer;
mod vision;

pub use load::{LoadMode, LoadReport, MismatchReport, ShapeMismatch, load_named};
pub use lora::{LoraConfig, LoraTarget, LoraTower, is_adapter, merge_adapters, peft_name};
pub use patch_dropout::{PatchDraw, kept_patches};
pub use spec::{
    Activation, LogitHead, ModelKind, ModelSpec, TextConfig, TextPooling, VisionConfig, mlp_width,
};
pub use text::{TextTransformer, pooled_positions};
pub use vision::VisionTransformer;

use std::path::PathBuf;
use tch::{Tensor, nn};
use transformer::{Linear, WeightInit};

/// Why a model could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The spec cannot describe a working network.
    #[error("invalid model config: {0}")]
    Config(String),
    /// LoRA matrices that cannot be folded into the weights they adapt.
    #[error("LoRA adapters in {}: {reason}", path.display())]
    Adapter { path: PathBuf, reason: String },
    /// Weights that do not fit the model, every problem listed.
    #[error("{} does not fit the model:{report}", path.display())]
    Mismatch {
        path: PathBuf,
        report: MismatchReport,
    },
}

/// What one image-text forward pass gives the loss, with HF `CLIPOutput`'s meaning.
#[derive(Debug)]
pub struct ClipOutput {
    /// `[B_img, embed]`, L2-normalised.
    pub image_embeds: Tensor,
    /// `[B_txt, embed]`, L2-normalised.
    pub text_embeds: Tensor,
    /// `[B_img, B_txt]` = `exp(logit_scale) · image_embeds · text_embedsᵀ` (+ `logit_bias` for
    /// SigLIP, as HF's `SiglipModel`).
    pub logits_per_image: Tensor,
    /// `[B_txt, B_img]`, the transpose of `logits_per_image`.
    pub logits_per_text: Tensor,
}

/// Dual-encoder CLIP (with a learned logit bias when trained with the sigmoid loss), or SigLIP.
#[derive(Debug)]
pub struct ClipModel {
    vision: VisionTransformer,
    text: TextTransformer,
    /// CLIP only: SigLIP's towers end in their own heads.
    visual_projection: Option<Linear>,
    text_projection: Option<Linear>,
    logit_scale: Tensor,
    logit_bias: Option<Tensor>,
}

impl ClipModel {
    /// Creates every variable under `root` (normally `vs.root()`) as `spec` describes; the
    /// head decides whether a `logit_bias` exists and how `logit_scale` starts. Draws from
    /// libtorch's global RNG, so `tch::manual_seed` makes it deterministic.
    pub fn new(root: &nn::Path, spec: &ModelSpec) -> Result<Self, ModelError> {
        spec.validate()?;
        let eps = spec.layer_norm_eps;
        let embed = spec.embed_dim as i64;
        let (vw, tw) = (spec.vision.width as i64, spec.text.width as i64);
        let clip = spec.kind == ModelKind::Clip;
        let vision = VisionTransformer::new(
            &(root / "vision_model"),
            &spec.vision,
            spec.kind,
            spec.activation,
            eps,
        );
        let text = TextTransformer::new(
            &(root / "text_model"),
            &spec.text,
            spec.kind,
            spec.text.activation.unwrap_or(spec.activation),
            eps,
            spec.eot_id,
            spec.embed_dim,
        );
        // OpenCLIP draws both projections as w^-0.5·randn (its [w, embed] is HF's transpose).
        let projection = |name: &str, w: i64| {
            clip.then(|| {
                Linear::new(
                    &(root / name),
                    w,
                    embed,
                    false,
                    WeightInit::Normal((w as f64).powf(-0.5)),
                )
            })
        };
        let visual_projection = projection("visual_projection", vw);
        let text_projection = projection("text_projection", tw);
        // HF's SiglipModel holds both scalars as shape [1]; CLIP's logit_scale is 0-dim.
        let shape: &[i64] = if clip { &[] } else { &[1] };
        let logit_scale = root.var(
            "logit_scale",
            shape,
            nn::Init::Const(spec.head.logit_scale_init()),
        );
        let logit_bias = spec
            .head
            .logit_bias_init()
            .map(|b| root.var("logit_bias", shape, nn::Init::Const(b)));
        Ok(Self {
            vision,
            text,
            visual_projection,
            text_projection,
            logit_scale,
            logit_bias,
        })
    }

    /// `[B, 3, H, W]` normalised images to `[B, embed]` projected features (not normalised),
    /// every patch seen: what evaluation, embedding and export use.
    pub fn encode_image(&self, images: &Tensor) -> Tensor {
        project(&self.visual_projection, self.vision.forward(images))
    }

    /// [`Self::encode_image`] in a training step: with `model.vision.patch_dropout > 0` each
    /// image keeps only the patch tokens `draw` picks for it; with 0 it is `encode_image`.
    pub fn encode_image_train(&self, images: &Tensor, draw: PatchDraw) -> Tensor {
        project(
            &self.visual_projection,
            self.vision.forward_train(images, draw),
        )
    }

    /// `[B, T]` int64 token ids to `[B, embed]` projected features (not normalised).
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        project(&self.text_projection, self.text.forward(tokens))
    }

    /// Encodes both batches and scores every image against every caption.
    pub fn forward(&self, images: &Tensor, tokens: &Tensor) -> ClipOutput {
        let image_embeds = l2_normalize(&self.encode_image(images));
        let text_embeds = l2_normalize(&self.encode_text(tokens));
        let scaled = text_embeds.matmul(&image_embeds.tr()) * self.logit_scale.exp();
        let logits_per_text = match &self.logit_bias {
            Some(bias) => scaled + bias,
            None => scaled,
        };
        ClipOutput {
            logits_per_image: logits_per_text.tr(),
            logits_per_text,
            image_embeds,
            text_embeds,
        }
    }

    /// Gives the blocks `cfg` names LoRA adapters (see [`LoraConfig`]), created under `root` (the
    /// path the model was built under) beside the weights they adapt. They start as the
    /// identity (`lora_B = 0`); their init draws come after the model's, so a seed gives the
    /// same base weights with and without adapters.
    pub fn attach_adapters(&mut self, root: &nn::Path, cfg: &LoraConfig) {
        if cfg.covers(LoraTower::Image) {
            self.vision.attach_adapters(&(root / "vision_model"), cfg);
        }
        if cfg.covers(LoraTower::Text) {
            self.text.attach_adapters(&(root / "text_model"), cfg);
        }
    }

    /// Activation checkpointing (`model.grad_checkpointing`): in training, each encoder layer
    /// of both towers keeps only its input and is recomputed in the backward pass — less
    /// memory for about a third more compute, the same gradients. Evaluation (no grad) is
    /// unaffected.
    pub fn set_grad_checkpointing(&mut self, on: bool) {
        self.vision.set_grad_checkpointing(on);
        self.text.set_grad_checkpointing(on);
    }

    /// The log of the logit temperature (variable `logit_scale`: 0-dim for CLIP, `[1]` for
    /// SigLIP as HF stores it).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// SigLIP's scalar logit bias (variable `logit_bias`); `None` for InfoNCE models.
    pub fn logit_bias(&self) -> Option<&Tensor> {
        self.logit_bias.as_ref()
    }
}

/// A tower's pooled output through its projection (CLIP); SigLIP's towers project themselves.
fn project(projection: &Option<Linear>, pooled: Tensor) -> Tensor {
    match projection {
        Some(p) => p.forward(&pooled),
        None => pooled,
    }
}

/// Row-wise L2 normalisation, as `F.normalize(x, dim=-1)`: the 1e-12 floor only matters for an
/// all-zero row (0 instead of NaN), so real features match HF's plain `x / ‖x‖₂` exactly.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-12)
}

/// Whether the variable called `name` is excluded from weight decay: biases, LayerNorm gains
/// and biases, class and position embeddings, `logit_scale` and `logit_bias` — OpenCLIP's rule
/// (`ndim < 2`, plus the position/class embeddings) expressed on HF names.
pub fn no_weight_decay(name: &str) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    leaf == "bias"
        || leaf == "in_proj_bias"
        || leaf == "logit_scale"
        || leaf == "logit_bias"
        || leaf == "class_embedding"
        // SigLIP's attention-pooling query token.
        || leaf == "probe"
        || name.contains("position_embedding")
        // layer_norm1/2, pre_layrnorm (HF's spelling), post_layernorm, final_layer_norm.
        || name.contains("norm")
}

#[cfg(test)]
mod tests;

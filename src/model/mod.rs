//! The CLIP model: a ViT image tower and a causal text tower projected into one embedding space.
//!
//! Every variable is created under nested [`nn::Path`]s that spell Hugging Face `CLIPModel`'s
//! state-dict names and layouts, so `vs.save("model.safetensors")` is an HF checkpoint and
//! [`load_hf_safetensors`] reads one back (or an HF-trained model) unchanged. Initialisation
//! follows OpenCLIP. The model owns no training logic: losses and optimizers live elsewhere and
//! use [`ClipOutput`], [`ClipModel::logit_scale`] and [`no_weight_decay`].
mod load;
mod text;
mod transformer;
mod vision;

pub use load::{MismatchReport, ShapeMismatch, load_hf_safetensors};
pub use text::TextTransformer;
pub use vision::VisionTransformer;

use crate::config::{LossKind, ModelConfig};
use std::path::PathBuf;
use tch::{Tensor, nn};
use transformer::{Linear, WeightInit};

/// Why a model could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model config cannot describe a working network.
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("{} does not match the model:{report}", path.display())]
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

/// Dual-encoder CLIP (or SigLIP, which only adds a learned logit bias).
#[derive(Debug)]
pub struct ClipModel {
    vision: VisionTransformer,
    text: TextTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
    logit_bias: Option<Tensor>,
}

impl ClipModel {
    /// Creates every variable under `root` (normally `vs.root()`). `eot_id` is the tokenizer's
    /// end-of-text id (49407 for CLIP's BPE); `loss` decides whether a `logit_bias` exists and
    /// how `logit_scale` starts (`ln(1/0.07)` for InfoNCE, `ln 10` with bias −10 for SigLIP).
    /// Draws from libtorch's global RNG, so `tch::manual_seed` makes it deterministic.
    pub fn new(
        root: &nn::Path,
        cfg: &ModelConfig,
        eot_id: i64,
        loss: LossKind,
    ) -> Result<Self, ModelError> {
        check_config(cfg, eot_id)?;
        let eps = cfg.layer_norm_eps;
        let embed = cfg.embed_dim as i64;
        let (vw, tw) = (cfg.vision.width as i64, cfg.text.width as i64);
        let vision =
            VisionTransformer::new(&(root / "vision_model"), &cfg.vision, cfg.activation, eps);
        let text = TextTransformer::new(
            &(root / "text_model"),
            &cfg.text,
            cfg.activation,
            eps,
            eot_id,
        );
        // OpenCLIP draws both projections as w^-0.5·randn (its [w, embed] is HF's transpose).
        let visual_projection = Linear::new(
            &(root / "visual_projection"),
            vw,
            embed,
            false,
            WeightInit::Normal((vw as f64).powf(-0.5)),
        );
        let text_projection = Linear::new(
            &(root / "text_projection"),
            tw,
            embed,
            false,
            WeightInit::Normal((tw as f64).powf(-0.5)),
        );
        let scale_init = match loss {
            LossKind::InfoNce => (1.0f64 / 0.07).ln(),
            LossKind::Siglip => 10f64.ln(),
        };
        let logit_scale = root.var("logit_scale", &[], nn::Init::Const(scale_init));
        let logit_bias =
            (loss == LossKind::Siglip).then(|| root.var("logit_bias", &[], nn::Init::Const(-10.0)));
        Ok(Self {
            vision,
            text,
            visual_projection,
            text_projection,
            logit_scale,
            logit_bias,
        })
    }

    /// `[B, 3, H, W]` normalised images to `[B, embed]` projected features (not normalised).
    pub fn encode_image(&self, images: &Tensor) -> Tensor {
        self.visual_projection.forward(&self.vision.forward(images))
    }

    /// `[B, T]` int64 token ids to `[B, embed]` projected features (not normalised).
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        self.text_projection.forward(&self.text.forward(tokens))
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

    /// The log of the logit temperature (scalar variable `logit_scale`).
    pub fn logit_scale(&self) -> &Tensor {
        &self.logit_scale
    }

    /// SigLIP's scalar logit bias (variable `logit_bias`); `None` for InfoNCE models.
    pub fn logit_bias(&self) -> Option<&Tensor> {
        self.logit_bias.as_ref()
    }
}

/// `x / ‖x‖₂` along the last dimension, without an epsilon, exactly as HF.
fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true)
}

fn check_config(cfg: &ModelConfig, eot_id: i64) -> Result<(), ModelError> {
    let (v, t) = (&cfg.vision, &cfg.text);
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
    if eot_id < 0 || eot_id as usize >= t.vocab_size {
        return bad(format!(
            "end-of-text id {eot_id} is outside the vocabulary of {}",
            t.vocab_size
        ));
    }
    Ok(())
}

/// Whether the variable called `name` is excluded from weight decay: biases, LayerNorm gains
/// and biases, class and position embeddings, `logit_scale` and `logit_bias` — OpenCLIP's rule
/// (`ndim < 2`, plus the position/class embeddings) expressed on HF names.
pub fn no_weight_decay(name: &str) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    leaf == "bias"
        || leaf == "logit_scale"
        || leaf == "logit_bias"
        || leaf == "class_embedding"
        || name.contains("position_embedding")
        // layer_norm1/2, pre_layrnorm (HF's spelling), post_layernorm, final_layer_norm.
        || name.contains("norm")
}

#[cfg(test)]
mod tests;

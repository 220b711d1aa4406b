//! The image tower, named as HF's `CLIPVisionTransformer` (a ViT with a class token) or
//! `SiglipVisionTransformer` (no class token, attention-pooled) under `vision_model.*`.
use super::patch_dropout::{PatchDraw, drop_patches};
use super::pooling_head::AttentionPoolingHead;
use super::spec::{Activation, ModelKind, VisionConfig, mlp_width};
use super::transformer::{Encoder, LayerInit, LayerNorm, StackSpec, WeightInit, weight};
use tch::{Tensor, nn};

/// ViT image encoder producing the pooled feature: CLIP's post-LayerNorm class token (before
/// the joint-space projection), or SigLIP's attention-pooling head output (the joint space).
#[derive(Debug)]
pub struct VisionTransformer {
    patch_embedding: Tensor,
    /// SigLIP's patch embedding has a bias; CLIP's has none.
    patch_bias: Option<Tensor>,
    /// CLIP only.
    class_embedding: Option<Tensor>,
    position_embedding: Tensor,
    /// CLIP only.
    pre_layrnorm: Option<LayerNorm>,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    /// SigLIP only: pools all tokens instead of taking the class token.
    head: Option<AttentionPoolingHead>,
    patch_size: i64,
    image_size: i64,
    patch_dropout: f64,
}

impl VisionTransformer {
    /// Creates the tower's variables under `p` (HF's `vision_model`) for a model of `kind`.
    ///
    /// CLIP init follows OpenCLIP's ViT: class and position embeddings `w^-0.5·randn`,
    /// everything else PyTorch's defaults (OpenCLIP leaves the vision blocks uninitialised),
    /// with biases 0. SigLIP init follows HF's `SiglipPreTrainedModel._init_weights`: patch
    /// embedding LeCun normal (untruncated here), positions `w^-0.5·randn`, attention and MLP
    /// matrices xavier-uniform, biases 0 (HF draws the MLP biases at std 1e-6).
    pub fn new(
        p: &nn::Path,
        cfg: &VisionConfig,
        kind: ModelKind,
        activation: Activation,
        eps: f64,
    ) -> Self {
        let siglip = kind == ModelKind::Siglip;
        let w = cfg.width as i64;
        let patch = cfg.patch_size as i64;
        let grid = (cfg.image_size / cfg.patch_size) as i64;
        let mlp_width = mlp_width(cfg.width, cfg.mlp_ratio) as i64;
        let scale = (w as f64).powf(-0.5);
        let emb = p / "embeddings";
        let patch_path = &emb / "patch_embedding";
        let fan_in = 3 * patch * patch;
        let patch_embedding = weight(
            &patch_path,
            &[w, 3, patch, patch],
            match siglip {
                true => WeightInit::Normal((fan_in as f64).powf(-0.5)),
                false => WeightInit::torch_default(fan_in),
            },
        );
        let patch_bias = siglip.then(|| patch_path.zeros("bias", &[w]));
        let class_embedding = (!siglip).then(|| {
            emb.var(
                "class_embedding",
                &[w],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: scale,
                },
            )
        });
        let positions = grid * grid + i64::from(!siglip);
        let position_embedding = weight(
            &(&emb / "position_embedding"),
            &[positions, w],
            WeightInit::Normal(scale),
        );
        let spec = StackSpec {
            width: w,
            layers: cfg.layers as i64,
            heads: cfg.heads as i64,
            mlp_width,
            activation,
            eps,
            causal: false,
        };
        let init = match siglip {
            true => LayerInit::xavier(w, mlp_width),
            // nn.MultiheadAttention's in_proj is xavier-uniform over its fused [3w, w] matrix.
            false => LayerInit {
                qkv: WeightInit::Uniform((6.0 / (4 * w) as f64).sqrt()),
                out_proj: WeightInit::torch_default(w),
                fc1: WeightInit::torch_default(w),
                fc2: WeightInit::torch_default(mlp_width),
            },
        };
        Self {
            patch_embedding,
            patch_bias,
            class_embedding,
            position_embedding,
            pre_layrnorm: (!siglip).then(|| LayerNorm::new(&(p / "pre_layrnorm"), w, eps)),
            encoder: Encoder::new(&(p / "encoder"), &spec, &init),
            post_layernorm: LayerNorm::new(&(p / "post_layernorm"), w, eps),
            head: siglip.then(|| AttentionPoolingHead::new(&(p / "head"), &spec, &init)),
            patch_size: patch,
            image_size: cfg.image_size as i64,
            patch_dropout: cfg.patch_dropout,
        }
    }

    /// Attaches `cfg`'s adapters to this tower's blocks; `p` is the tower's path (`vision_model`).
    pub(crate) fn attach_adapters(&mut self, p: &nn::Path, cfg: &super::LoraConfig) {
        let tower = super::LoraTower::Image;
        self.encoder.attach_adapters(&(p / "encoder"), cfg, tower);
    }

    /// Activation checkpointing of the encoder layers (see [`crate::shim::recompute_in_backward`]).
    pub(crate) fn set_grad_checkpointing(&mut self, on: bool) {
        self.encoder.checkpointed = on;
    }

    /// `[B, 3, H, W]` images (H = W = the configured size) to `[B, width]` pooled features,
    /// with every patch token: evaluation, embedding and export.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.forward_with(images, None)
    }

    /// [`Self::forward`] for training: with `patch_dropout > 0`, only the patch tokens `draw`
    /// picks go through the encoder (see [`super::patch_dropout`]).
    pub fn forward_train(&self, images: &Tensor, draw: PatchDraw) -> Tensor {
        self.forward_with(images, Some(draw))
    }

    fn forward_with(&self, images: &Tensor, draw: Option<PatchDraw>) -> Tensor {
        let (b, _, h, w) = images
            .size4()
            .expect("images are [batch, 3, height, width]");
        assert!(
            h == self.image_size && w == self.image_size,
            "images are {h}x{w}, the model expects {0}x{0}",
            self.image_size
        );
        let patches = images
            .to_kind(self.patch_embedding.kind())
            .conv2d(
                &self.patch_embedding,
                self.patch_bias.as_ref(),
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let x = match &self.class_embedding {
            Some(class) => {
                let width = class.size()[0];
                let cls = class.view([1, 1, width]).expand([b, 1, width], false);
                Tensor::cat(&[cls, patches], 1)
            }
            None => patches,
        } + self.position_embedding.unsqueeze(0);
        let x = match draw {
            Some(draw) => drop_patches(&x, self.patch_dropout, draw, self.head.is_none()),
            None => x,
        };
        let x = match &self.pre_layrnorm {
            Some(ln) => ln.forward(&x),
            None => x,
        };
        let x = self.encoder.forward(&x);
        match &self.head {
            Some(head) => head.forward(&self.post_layernorm.forward(&x)),
            None => self.post_layernorm.forward(&x.select(1, 0)),
        }
    }
}

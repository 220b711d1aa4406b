//! The image tower: a ViT with a class token, named as HF's `CLIPVisionTransformer`
//! (`vision_model.*`).
use super::patch_dropout::{PatchDraw, drop_patches};
use super::spec::{Activation, VisionConfig, mlp_width};
use super::transformer::{Encoder, LayerInit, LayerNorm, StackSpec, WeightInit, weight};
use tch::{Tensor, nn};

/// ViT image encoder producing the pooled (post-LayerNorm class token) feature, before the
/// joint-space projection.
#[derive(Debug)]
pub struct VisionTransformer {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    patch_size: i64,
    image_size: i64,
    patch_dropout: f64,
}

impl VisionTransformer {
    /// Creates the tower's variables under `p` (HF's `vision_model`).
    ///
    /// Init follows OpenCLIP's ViT: class and position embeddings `w^-0.5·randn`, everything
    /// else PyTorch's defaults (OpenCLIP leaves the vision blocks uninitialised), with biases 0.
    pub fn new(p: &nn::Path, cfg: &VisionConfig, activation: Activation, eps: f64) -> Self {
        let w = cfg.width as i64;
        let patch = cfg.patch_size as i64;
        let grid = (cfg.image_size / cfg.patch_size) as i64;
        let mlp_width = mlp_width(cfg.width, cfg.mlp_ratio) as i64;
        let scale = (w as f64).powf(-0.5);
        let emb = p / "embeddings";
        let patch_embedding = weight(
            &(&emb / "patch_embedding"),
            &[w, 3, patch, patch],
            WeightInit::torch_default(3 * patch * patch),
        );
        let class_embedding = emb.var(
            "class_embedding",
            &[w],
            nn::Init::Randn {
                mean: 0.0,
                stdev: scale,
            },
        );
        let position_embedding = weight(
            &(&emb / "position_embedding"),
            &[grid * grid + 1, w],
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
        // nn.MultiheadAttention's in_proj is xavier-uniform over its fused [3w, w] matrix.
        let init = LayerInit {
            qkv: WeightInit::Uniform((6.0 / (4 * w) as f64).sqrt()),
            out_proj: WeightInit::torch_default(w),
            fc1: WeightInit::torch_default(w),
            fc2: WeightInit::torch_default(mlp_width),
        };
        Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            pre_layrnorm: LayerNorm::new(&(p / "pre_layrnorm"), w, eps),
            encoder: Encoder::new(&(p / "encoder"), &spec, &init),
            post_layernorm: LayerNorm::new(&(p / "post_layernorm"), w, eps),
            patch_size: patch,
            image_size: cfg.image_size as i64,
            patch_dropout: cfg.patch_dropout,
        }
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
                None::<Tensor>,
                [self.patch_size, self.patch_size],
                [0, 0],
                [1, 1],
                1,
            )
            .flatten(2, -1)
            .transpose(1, 2);
        let width = self.class_embedding.size()[0];
        let cls = self
            .class_embedding
            .view([1, 1, width])
            .expand([b, 1, width], false);
        let x = Tensor::cat(&[cls, patches], 1) + self.position_embedding.unsqueeze(0);
        let x = match draw {
            Some(draw) => drop_patches(&x, self.patch_dropout, draw),
            None => x,
        };
        let x = self.encoder.forward(&self.pre_layrnorm.forward(&x));
        self.post_layernorm.forward(&x.select(1, 0))
    }
}

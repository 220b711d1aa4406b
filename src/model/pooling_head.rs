//! SigLIP's multi-head attention pooling head (HF's `SiglipMultiheadAttentionPoolingHead`,
//! `vision_model.head.*`): a learned probe token attends over every patch token, then a
//! residual MLP. Its attention is PyTorch's `nn.MultiheadAttention`, so its weights keep that
//! module's fused layout (`attention.in_proj_weight` `[3w, w]`, `attention.in_proj_bias`,
//! `attention.out_proj`).
use super::transformer::{LayerInit, LayerNorm, Linear, Mlp, StackSpec, WeightInit};
use tch::{Tensor, nn};

/// Pools `[B, N, w]` tokens into `[B, w]`.
#[derive(Debug)]
pub(crate) struct AttentionPoolingHead {
    probe: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    layernorm: LayerNorm,
    mlp: Mlp,
    heads: i64,
}

impl AttentionPoolingHead {
    /// Creates the head under `p` (HF's `vision_model.head`); `s` is the vision stack's shape
    /// (the head's MLP is as wide as the encoder's).
    ///
    /// Init follows HF's `SiglipPreTrainedModel._init_weights`: probe and in-projection
    /// xavier-uniform, in-projection bias 0, `out_proj` LeCun normal (untruncated here), the MLP
    /// as `init` gives it.
    pub(crate) fn new(p: &nn::Path, s: &StackSpec, init: &LayerInit) -> Self {
        let w = s.width;
        let attn = p / "attention";
        Self {
            // xavier over [1, 1, w]: fan_in = fan_out = w.
            probe: p.var(
                "probe",
                &[1, 1, w],
                nn::Init::Uniform {
                    lo: -(3.0 / w as f64).sqrt(),
                    up: (3.0 / w as f64).sqrt(),
                },
            ),
            in_proj_weight: attn.var(
                "in_proj_weight",
                &[3 * w, w],
                nn::Init::Uniform {
                    lo: -(6.0 / (4 * w) as f64).sqrt(),
                    up: (6.0 / (4 * w) as f64).sqrt(),
                },
            ),
            in_proj_bias: attn.zeros("in_proj_bias", &[3 * w]),
            out_proj: Linear::new(
                &(&attn / "out_proj"),
                w,
                w,
                true,
                WeightInit::Normal((w as f64).powf(-0.5)),
            ),
            layernorm: LayerNorm::new(&(p / "layernorm"), w, s.eps),
            mlp: Mlp::new(&(p / "mlp"), s, init),
            heads: s.heads,
        }
    }

    /// `[B, N, w]` (post-LayerNorm tokens) to `[B, w]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, w) = x
            .size3()
            .expect("pooling head input is [batch, tokens, width]");
        let hd = w / self.heads;
        let wq = self.in_proj_weight.narrow(0, 0, w);
        let wkv = self.in_proj_weight.narrow(0, w, 2 * w);
        let bq = self.in_proj_bias.narrow(0, 0, w);
        let bkv = self.in_proj_bias.narrow(0, w, 2 * w);
        let q = self
            .probe
            .linear(&wq, Some(&bq))
            .view([1, 1, self.heads, hd])
            .transpose(1, 2)
            .expand([b, self.heads, 1, hd], false)
            .contiguous();
        // [B, N, 2w] -> k and v as [B, heads, N, hd].
        let kv = x
            .linear(&wkv, Some(&bkv))
            .view([b, n, 2, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &kv.get(0),
            &kv.get(1),
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let y = self.out_proj.forward(&y.transpose(1, 2).reshape([b, 1, w]));
        let y = &y + self.mlp.forward(&self.layernorm.forward(&y));
        y.squeeze_dim(1)
    }
}

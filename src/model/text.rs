//! The text tower under `text_model.*`: HF's `CLIPTextTransformer` (causal, pooled where
//! [`TextPooling`] says, by default at the first end-of-text token) or `SiglipTextTransformer`
//! (bidirectional, pooled at the last position and projected by `text_model.head`).
use super::spec::{Activation, ModelKind, TextConfig, TextPooling, mlp_width};
use super::transformer::{
    Encoder, LayerInit, LayerNorm, Linear, StackSpec, WeightInit, gather_rows, weight,
};
use tch::{Kind, Tensor, nn};

/// Text encoder producing CLIP's final-LayerNorm feature at each caption's first EOT token
/// (before the joint-space projection), or SigLIP's head output at the last position (the
/// joint space).
#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    /// SigLIP only: `Linear(width, embed_dim)` with bias; its presence also means pooling at
    /// the last position instead of the EOT.
    head: Option<Linear>,
    eot_id: i64,
    pooling: TextPooling,
    context_length: i64,
}

impl TextTransformer {
    /// Creates the tower's variables under `p` (HF's `text_model`) for a model of `kind`.
    /// `eot_id` is the tokenizer's end-of-text id; CLIP pooling takes the first position
    /// holding it. `embed_dim` is the joint space SigLIP's head projects into.
    ///
    /// CLIP init follows OpenCLIP's text tower: token embedding std 0.02, position 0.01,
    /// attention in-projections `w^-0.5`, out_proj and fc2 `w^-0.5·(2L)^-0.5`, fc1 `(2w)^-0.5`.
    /// SigLIP init follows HF's `_init_weights`: embeddings `w^-0.5·randn` (flax's default
    /// embedding init), attention and MLP xavier-uniform, the head LeCun normal, biases 0.
    pub fn new(
        p: &nn::Path,
        cfg: &TextConfig,
        kind: ModelKind,
        activation: Activation,
        eps: f64,
        eot_id: i64,
        embed_dim: usize,
    ) -> Self {
        let siglip = kind == ModelKind::Siglip;
        let w = cfg.width as i64;
        let layers = cfg.layers as i64;
        let wf = w as f64;
        let emb = p / "embeddings";
        let token_embedding = weight(
            &(&emb / "token_embedding"),
            &[cfg.vocab_size as i64, w],
            WeightInit::Normal(if siglip { wf.powf(-0.5) } else { 0.02 }),
        );
        let position_embedding = weight(
            &(&emb / "position_embedding"),
            &[cfg.context_length as i64, w],
            WeightInit::Normal(if siglip { wf.powf(-0.5) } else { 0.01 }),
        );
        let spec = StackSpec {
            width: w,
            layers,
            heads: cfg.heads as i64,
            mlp_width: mlp_width(cfg.width, cfg.mlp_ratio) as i64,
            activation,
            eps,
            causal: !siglip,
        };
        let proj_std = wf.powf(-0.5) * ((2 * layers.max(1)) as f64).powf(-0.5);
        let init = match siglip {
            true => LayerInit::xavier(w, spec.mlp_width),
            false => LayerInit {
                qkv: WeightInit::Normal(wf.powf(-0.5)),
                out_proj: WeightInit::Normal(proj_std),
                fc1: WeightInit::Normal((2.0 * wf).powf(-0.5)),
                fc2: WeightInit::Normal(proj_std),
            },
        };
        let head = siglip.then(|| {
            Linear::new(
                &(p / "head"),
                w,
                embed_dim as i64,
                true,
                WeightInit::Normal(wf.powf(-0.5)),
            )
        });
        Self {
            token_embedding,
            position_embedding,
            encoder: Encoder::new(&(p / "encoder"), &spec, &init),
            final_layer_norm: LayerNorm::new(&(p / "final_layer_norm"), w, eps),
            head,
            eot_id,
            pooling: cfg.pooling,
            context_length: cfg.context_length as i64,
        }
    }

    /// Attaches `cfg`'s adapters to this tower's blocks; `p` is the tower's path (`text_model`).
    pub(crate) fn attach_adapters(&mut self, p: &nn::Path, cfg: &super::LoraConfig) {
        let tower = super::LoraTower::Text;
        self.encoder.attach_adapters(&(p / "encoder"), cfg, tower);
    }

    /// Activation checkpointing of the encoder layers (see [`crate::shim::recompute_in_backward`]).
    pub(crate) fn set_grad_checkpointing(&mut self, on: bool) {
        self.encoder.checkpointed = on;
    }

    /// `[B, T]` int64 token ids (T ≤ context length) to `[B, width]` pooled features (CLIP), or
    /// `[B, embed_dim]` head outputs (SigLIP).
    ///
    /// CLIP needs no padding mask: attention is causal and only the EOT position is pooled, so
    /// tokens after it never reach the output. A row without EOT pools position 0 (as HF).
    /// SigLIP attends over every position, padding included, and pools the last one, as HF's
    /// `SiglipTextModel` given no attention mask (SigLIP was trained on captions padded to the
    /// full context).
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let (_, t) = tokens.size2().expect("tokens are [batch, seq]");
        assert!(
            t <= self.context_length,
            "captions have {t} tokens, the model's context is {}",
            self.context_length
        );
        let x = Tensor::embedding(&self.token_embedding, tokens, -1, false, false)
            + self.position_embedding.narrow(0, 0, t).unsqueeze(0);
        let x = self.final_layer_norm.forward(&self.encoder.forward(&x));
        if let Some(head) = &self.head {
            return head.forward(&x.select(1, t - 1));
        }
        gather_rows(&x, &pooled_positions(tokens, self.pooling, self.eot_id))
    }
}

/// The position pooled in each `[B, T]` row of `tokens`, as `[B]` int64.
pub fn pooled_positions(tokens: &Tensor, pooling: TextPooling, eot_id: i64) -> Tensor {
    match pooling {
        // argmax returns the first maximal index, i.e. the first EOT.
        TextPooling::Eot => tokens.eq(eot_id).to_kind(Kind::Int64).argmax(-1, false),
        TextPooling::Argmax => tokens.argmax(-1, false),
        TextPooling::Last => {
            let (b, t) = tokens.size2().expect("tokens are [batch, seq]");
            Tensor::full([b], t - 1, (Kind::Int64, tokens.device()))
        }
    }
}

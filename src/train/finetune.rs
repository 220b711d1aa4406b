//! Fine-tuning controls (`[finetune]`): which parameters train and at what learning-rate
//! multiplier, decided from their (HF) names alone so the rules are easy to test and to read.
use crate::config::{FinetuneConfig, LogitScaleMode, LoraTower, LossKind, ModelConfig};
use tch::nn;

/// The tower a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tower {
    Image,
    Text,
    /// `logit_scale`, `logit_bias`.
    Shared,
}

fn tower(name: &str) -> Tower {
    if name.starts_with("vision_model.") || name.starts_with("visual_projection.") {
        Tower::Image
    } else if name.starts_with("text_model.") || name.starts_with("text_projection.") {
        Tower::Text
    } else {
        Tower::Shared
    }
}

/// Where in its tower a parameter sits: an encoder block, before the blocks (embeddings,
/// pre-LayerNorm) or after them (final LayerNorm, projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Embeddings,
    Block(usize),
    Head,
}

fn depth(name: &str) -> Depth {
    if let Some(rest) = name.split_once("encoder.layers.").map(|(_, r)| r)
        && let Some(i) = rest.split('.').next().and_then(|i| i.parse().ok())
    {
        return Depth::Block(i);
    }
    if name.contains("embeddings.") || name.contains("pre_layrnorm") {
        Depth::Embeddings
    } else {
        Depth::Head
    }
}

/// Whether `name` is frozen by `lock_image`/`lock_text` (with their unlocked last blocks) or by
/// `logit_scale = "freeze"`. A tower `[finetune.lora]` adapts is locked as by `lock_*` (its
/// `unlocked_*_layers` still train in full); the adapters themselves always train.
pub fn is_locked(ft: &FinetuneConfig, model: &ModelConfig, name: &str) -> bool {
    if crate::model::is_adapter(name) {
        return false;
    }
    let adapted = |t: LoraTower| ft.lora.as_ref().is_some_and(|l| l.covers(t));
    let locked_below = |unlocked: usize, layers: usize| match depth(name) {
        Depth::Embeddings => true,
        Depth::Block(i) => i + unlocked < layers,
        Depth::Head => unlocked == 0,
    };
    match tower(name) {
        Tower::Image => {
            (ft.lock_image || adapted(LoraTower::Image))
                && locked_below(ft.unlocked_image_layers, model.vision.layers)
        }
        Tower::Text => {
            (ft.lock_text || adapted(LoraTower::Text))
                && locked_below(ft.unlocked_text_layers, model.text.layers)
        }
        Tower::Shared => name == "logit_scale" && ft.logit_scale == LogitScaleMode::Freeze,
    }
}

/// The learning-rate multiplier of `name`: the tower's `*_lr_scale`, times the tower's
/// layer-wise decay (block i of L: `decay^(L-i)`, embeddings `decay^(L+1)`, head 1).
pub fn lr_scale(ft: &FinetuneConfig, model: &ModelConfig, name: &str) -> f64 {
    let decayed = |decay: f64, layers: usize| {
        let layers = layers as i32;
        let power = match depth(name) {
            Depth::Embeddings => layers + 1,
            Depth::Block(i) => layers - i as i32,
            Depth::Head => 0,
        };
        decay.powi(power)
    };
    match tower(name) {
        Tower::Image => ft.image_lr_scale * decayed(ft.image_layer_decay, model.vision.layers),
        Tower::Text => ft.text_lr_scale * decayed(ft.text_layer_decay, model.text.layers),
        Tower::Shared => 1.0,
    }
}

/// What [`apply`] did, for the log.
#[derive(Debug, Clone, Default)]
pub struct FinetuneSummary {
    pub frozen_tensors: usize,
    pub frozen_params: i64,
    pub trainable_params: i64,
}

/// Freezes the locked parameters of `vs` (no gradient, so no optimizer state and no update)
/// and resets `logit_scale` when asked. Call after loading `model.init_from`, before building
/// the optimizer.
pub fn apply(
    ft: &FinetuneConfig,
    model: &ModelConfig,
    loss: LossKind,
    vs: &nn::VarStore,
) -> FinetuneSummary {
    let mut s = FinetuneSummary::default();
    for (name, t) in vs.variables() {
        if is_locked(ft, model, &name) {
            let _ = t.set_requires_grad(false);
            s.frozen_tensors += 1;
            s.frozen_params += t.numel() as i64;
        } else {
            s.trainable_params += t.numel() as i64;
        }
        if name == "logit_scale" && ft.logit_scale == LogitScaleMode::Reset {
            let init = crate::model::LogitHead::from(loss).logit_scale_init();
            tch::no_grad(|| {
                let _ = t.shallow_clone().fill_(init);
            });
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        let mut m = ModelConfig::default();
        m.vision.layers = 4;
        m.text.layers = 3;
        m
    }

    #[test]
    fn lit_locks_the_image_tower_but_its_last_blocks() {
        let ft = FinetuneConfig {
            lock_image: true,
            unlocked_image_layers: 1,
            ..Default::default()
        };
        let m = model();
        let locked = |n: &str| is_locked(&ft, &m, n);
        assert!(locked("vision_model.embeddings.patch_embedding.weight"));
        assert!(locked("vision_model.pre_layrnorm.weight"));
        assert!(locked("vision_model.encoder.layers.2.mlp.fc1.weight"));
        assert!(!locked("vision_model.encoder.layers.3.mlp.fc1.weight"));
        assert!(!locked("vision_model.post_layernorm.bias"));
        assert!(!locked("visual_projection.weight"));
        assert!(!locked("text_model.encoder.layers.0.mlp.fc1.weight"));
        assert!(!locked("logit_scale"));
        let whole = FinetuneConfig {
            lock_text: true,
            logit_scale: LogitScaleMode::Freeze,
            ..Default::default()
        };
        assert!(is_locked(&whole, &m, "text_projection.weight"));
        assert!(is_locked(&whole, &m, "text_model.final_layer_norm.weight"));
        assert!(is_locked(&whole, &m, "logit_scale"));
        assert!(!is_locked(&whole, &m, "visual_projection.weight"));
    }

    #[test]
    fn layer_decay_and_tower_scales() {
        let ft = FinetuneConfig {
            image_lr_scale: 0.5,
            text_lr_scale: 2.0,
            image_layer_decay: 0.5,
            ..Default::default()
        };
        let m = model();
        let s = |n: &str| lr_scale(&ft, &m, n);
        assert_eq!(s("visual_projection.weight"), 0.5);
        assert_eq!(s("vision_model.post_layernorm.weight"), 0.5);
        assert_eq!(
            s("vision_model.encoder.layers.3.self_attn.q_proj.weight"),
            0.25
        );
        assert_eq!(
            s("vision_model.encoder.layers.0.self_attn.q_proj.weight"),
            0.5 / 16.0
        );
        assert_eq!(s("vision_model.embeddings.class_embedding"), 0.5 / 32.0);
        assert_eq!(s("text_model.encoder.layers.0.mlp.fc2.bias"), 2.0);
        assert_eq!(s("logit_scale"), 1.0);
        // The text tower's own decay (3 blocks): head 1, block 2 decay, token embedding decay^4.
        let text = FinetuneConfig {
            text_layer_decay: 0.5,
            ..ft
        };
        let s = |n: &str| lr_scale(&text, &m, n);
        assert_eq!(s("text_projection.weight"), 2.0);
        assert_eq!(s("text_model.final_layer_norm.weight"), 2.0);
        assert_eq!(s("text_model.encoder.layers.2.mlp.fc2.bias"), 1.0);
        assert_eq!(s("text_model.encoder.layers.0.mlp.fc2.bias"), 0.25);
        assert_eq!(s("text_model.embeddings.token_embedding.weight"), 0.125);
        assert_eq!(
            s("vision_model.encoder.layers.3.self_attn.q_proj.weight"),
            0.25
        );
    }
}

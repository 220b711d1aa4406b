//! LoRA (Hu et al. 2021): a frozen linear layer `W` learns a low-rank update,
//! `y = x Wᵀ + b + (α/r) · B A x` with `A: [r, in]` and `B: [out, r]`, B starting at zero so the
//! adapted model starts as the base. The adapters are variables beside the weight they adapt,
//! named as Hugging Face PEFT names them in a `CLIPModel` (`….q_proj.lora_A.weight`), so a
//! checkpoint's adapters and a PEFT adapter file differ only by PEFT's `base_model.model.`
//! prefix. [`merge_adapters`] folds them into plain weights: what every reader of a LoRA
//! checkpoint (eval, export, merge) sees.
use super::ModelError;
use super::transformer::WeightInit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor, nn};

/// A linear layer of an encoder block that LoRA can adapt, named as in `modeling_clip.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OutProj,
    Fc1,
    Fc2,
}

impl LoraTarget {
    /// The module's name in HF's (and PEFT's) module tree.
    pub fn module(self) -> &'static str {
        match self {
            Self::QProj => "q_proj",
            Self::KProj => "k_proj",
            Self::VProj => "v_proj",
            Self::OutProj => "out_proj",
            Self::Fc1 => "fc1",
            Self::Fc2 => "fc2",
        }
    }

    /// Its path inside an encoder layer.
    pub fn path_in_layer(self) -> String {
        match self {
            Self::Fc1 | Self::Fc2 => format!("mlp.{}", self.module()),
            _ => format!("self_attn.{}", self.module()),
        }
    }
}

/// A tower LoRA adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTower {
    Image,
    Text,
}

impl LoraTower {
    /// The tower's module prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Image => "vision_model",
            Self::Text => "text_model",
        }
    }
}

/// `[finetune.lora]`: where adapters sit and how large they are. The base weights of an adapted
/// tower are frozen; only the adapters (and what `[finetune]` leaves unlocked) train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// The rank r of each update (1 ..= the layer's smaller side).
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapter's input in training steps (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// Which linears of each encoder block carry adapters.
    pub targets: Vec<LoraTarget>,
    /// Which towers.
    pub towers: Vec<LoraTower>,
    /// Only the last N blocks of each adapted tower; 0 = every block.
    pub last_layers: usize,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![LoraTarget::QProj, LoraTarget::VProj],
            towers: vec![LoraTower::Image, LoraTower::Text],
            last_layers: 0,
        }
    }
}

impl LoraConfig {
    /// `alpha / rank`, the factor of every update.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }

    /// Whether `tower` carries adapters.
    pub fn covers(&self, tower: LoraTower) -> bool {
        self.towers.contains(&tower)
    }

    /// Whether block `layer` of `layers` in `tower` carries adapters.
    pub fn adapts_layer(&self, tower: LoraTower, layer: usize, layers: usize) -> bool {
        self.covers(tower) && (self.last_layers == 0 || layer + self.last_layers >= layers)
    }

    /// What does not fit the towers `vision` and `text`: `(key, value, rule)` for a rank above
    /// an adapted tower's smaller layer side, or more `last_layers` than it has blocks. Config
    /// validation and the model build (which sees `model.init_from`'s towers) both ask here.
    pub fn size_problems(
        &self,
        vision: &super::VisionConfig,
        text: &super::TextConfig,
    ) -> Vec<(&'static str, usize, String)> {
        let mut out = Vec::new();
        for tower in &self.towers {
            let (name, width, ratio, layers) = match tower {
                LoraTower::Image => ("image", vision.width, vision.mlp_ratio, vision.layers),
                LoraTower::Text => ("text", text.width, text.mlp_ratio, text.layers),
            };
            let side = width.min(super::mlp_width(width, ratio));
            if self.rank > side {
                out.push((
                    "finetune.lora.rank",
                    self.rank,
                    format!(
                        "be at most the {name} tower's width {side} (a larger rank is not low-rank)"
                    ),
                ));
            }
            if self.last_layers > layers {
                out.push((
                    "finetune.lora.last_layers",
                    self.last_layers,
                    format!("be at most the {name} tower's {layers} layers (0 = every block)"),
                ));
            }
        }
        out
    }

    /// Every adapted module by its HF name (`vision_model.encoder.layers.3.self_attn.q_proj`),
    /// for a model whose towers have `image_layers` and `text_layers` blocks: PEFT's
    /// `target_modules`.
    pub fn modules(&self, image_layers: usize, text_layers: usize) -> Vec<String> {
        let mut out = Vec::new();
        for tower in [LoraTower::Image, LoraTower::Text] {
            let layers = match tower {
                LoraTower::Image => image_layers,
                LoraTower::Text => text_layers,
            };
            for i in (0..layers).filter(|&i| self.adapts_layer(tower, i, layers)) {
                for t in &self.targets {
                    let (p, inner) = (tower.prefix(), t.path_in_layer());
                    out.push(format!("{p}.encoder.layers.{i}.{inner}"));
                }
            }
        }
        out
    }
}

/// The low-rank update of one linear layer.
#[derive(Debug)]
pub(crate) struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
}

impl Adapter {
    /// `lora_A.weight` `[r, inp]` drawn as PEFT does (PyTorch's linear default, `U(±1/√inp)`)
    /// and `lora_B.weight` `[out, r]` at zero, under the adapted layer's path `p`.
    pub(crate) fn new(p: &nn::Path, inp: i64, out: i64, cfg: &LoraConfig) -> Self {
        let r = cfg.rank as i64;
        let a =
            super::transformer::weight(&(p / "lora_A"), &[r, inp], WeightInit::torch_default(inp));
        let b = (p / "lora_B").zeros("weight", &[out, r]);
        Self {
            a,
            b,
            scale: cfg.scale(),
            dropout: cfg.dropout,
        }
    }

    /// `(α/r) · B A dropout(x)`. Dropout acts only while autograd records (a training step),
    /// never under `no_grad` (evaluation, embedding).
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let train = self.dropout > 0.0 && crate::shim::grad_enabled();
        let x = if train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear::<&Tensor>(&self.a, None)
            .linear::<&Tensor>(&self.b, None)
            * self.scale
    }

    pub(crate) fn share(&self) -> Self {
        Self {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            ..*self
        }
    }

    pub(crate) fn parameters(&self, out: &mut Vec<Tensor>) {
        out.extend([self.a.shallow_clone(), self.b.shallow_clone()]);
    }
}

/// Whether a variable is a LoRA adapter matrix.
pub fn is_adapter(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// PEFT's name of one of our adapter variables in `adapter_model.safetensors`.
pub fn peft_name(name: &str) -> String {
    format!("base_model.model.{name}")
}

/// Folds every `X.lora_A.weight` / `X.lora_B.weight` pair of `tensors` into `X.weight`
/// (`W + scale · B A`, computed in fp32 and stored in W's dtype) and drops the adapters; the
/// rest passes through. `path` names the file in errors: an adapter without its partner or its
/// base weight, or shapes that do not compose, are refused rather than skipped.
pub fn merge_adapters(
    tensors: Vec<(String, Tensor)>,
    scale: f64,
    path: &Path,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let bad = |reason: String| ModelError::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let mut plain: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut pairs: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            pairs.entry(module.to_string()).or_default().0 = Some(t);
        } else if let Some(module) = name.strip_suffix(".lora_B.weight") {
            pairs.entry(module.to_string()).or_default().1 = Some(t);
        } else if is_adapter(&name) {
            return Err(bad(format!(
                "{name} is not a LoRA matrix cliptrain reads (lora_A.weight / lora_B.weight)"
            )));
        } else {
            plain.insert(name, t);
        }
    }
    for (module, pair) in pairs {
        let (Some(a), Some(b)) = pair else {
            return Err(bad(format!(
                "{module} has only one of lora_A.weight and lora_B.weight"
            )));
        };
        let key = format!("{module}.weight");
        let Some(w) = plain.get(&key) else {
            return Err(bad(format!(
                "an adapter for {module}, which has no {key} to adapt"
            )));
        };
        let (ws, as_, bs) = (w.size(), a.size(), b.size());
        let fits = ws.len() == 2
            && as_.len() == 2
            && bs.len() == 2
            && as_[1] == ws[1]
            && bs[0] == ws[0]
            && as_[0] == bs[1];
        if !fits {
            return Err(bad(format!(
                "the adapter of {module} does not fit its weight: {key} {ws:?}, lora_A {as_:?}, \
                 lora_B {bs:?} (expected [r, {}] and [{}, r])",
                ws.get(1).copied().unwrap_or(0),
                ws.first().copied().unwrap_or(0),
            )));
        }
        let merged = tch::no_grad(|| {
            let delta = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)) * scale;
            (w.to_kind(Kind::Float) + delta).to_kind(w.kind())
        });
        plain.insert(key, merged);
    }
    Ok(plain.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, max_diff, rng_lock, small_cfg, tokens_with_eot};
    use super::*;
    use crate::model::{ClipModel, LoadMode, LogitHead, load_named};
    use tch::Device;

    fn every_target() -> LoraConfig {
        use LoraTarget::*;
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec![QProj, KProj, VProj, OutProj, Fc1, Fc2],
            last_layers: 1,
            ..LoraConfig::default()
        }
    }

    fn features(m: &ClipModel, images: &Tensor, tokens: &Tensor) -> (Tensor, Tensor) {
        tch::no_grad(|| (m.encode_image(images), m.encode_text(tokens)))
    }

    /// Attached adapters start as the identity, and once trained (here: drawn at random), the
    /// weights with them folded in give the adapted model's features in a plain model.
    #[test]
    fn merged_weights_equal_the_adapted_model() {
        let _g = rng_lock();
        let spec = small_cfg();
        let (vs, mut model) = build(&spec, LogitHead::Clip);
        let images = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
        let tokens = tokens_with_eot(&[4, 7, 11]);
        let (base_i, base_t) = features(&model, &images, &tokens);
        let lora = every_target();
        model.attach_adapters(&vs.root(), &lora);
        let adapters: Vec<String> = vs
            .variables()
            .into_keys()
            .filter(|n| is_adapter(n))
            .collect();
        // The last block of two towers, six linears each, A and B.
        assert_eq!(adapters.len(), 2 * 6 * 2, "{adapters:?}");
        assert!(adapters.iter().all(|n| n.contains(".layers.1.")));
        let mut modules = lora.modules(2, 2);
        modules.sort();
        let mut from_vars: Vec<String> = adapters
            .iter()
            .filter_map(|n| n.strip_suffix(".lora_A.weight").map(str::to_string))
            .collect();
        from_vars.sort();
        assert_eq!(modules, from_vars);
        let (i0, t0) = features(&model, &images, &tokens);
        assert_eq!(max_diff(&i0, &base_i), 0.0);
        assert_eq!(max_diff(&t0, &base_t), 0.0);

        for (name, v) in vs.variables() {
            if name.contains(".lora_B.") {
                let _ = tch::no_grad(|| v.shallow_clone().normal_(0.0, 0.2));
            }
        }
        let (ai, at) = features(&model, &images, &tokens);
        assert!(
            max_diff(&ai, &base_i) > 1e-3,
            "the adapters change the features"
        );
        assert!(max_diff(&at, &base_t) > 1e-3);

        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let merged = merge_adapters(named, lora.scale(), Path::new("mem")).unwrap();
        assert!(merged.iter().all(|(n, _)| !is_adapter(n)));
        let (mut plain_vs, plain) = build(&spec, LogitHead::Clip);
        load_named(&mut plain_vs, merged, LoadMode::Strict, Path::new("mem")).unwrap();
        let (mi, mt) = features(&plain, &images, &tokens);
        assert!(max_diff(&mi, &ai) < 1e-5, "{}", max_diff(&mi, &ai));
        assert!(max_diff(&mt, &at) < 1e-5, "{}", max_diff(&mt, &at));
    }

    #[test]
    fn dropout_acts_only_while_autograd_records() {
        let _g = rng_lock();
        let (vs, mut model) = build(&small_cfg(), LogitHead::Clip);
        let lora = LoraConfig {
            dropout: 0.5,
            towers: vec![LoraTower::Text],
            ..every_target()
        };
        model.attach_adapters(&vs.root(), &lora);
        for (name, v) in vs.variables() {
            if name.contains(".lora_B.") {
                let _ = tch::no_grad(|| v.shallow_clone().normal_(0.0, 0.2));
            }
        }
        let tokens = tokens_with_eot(&[4, 7]);
        let eval = || tch::no_grad(|| model.encode_text(&tokens));
        assert_eq!(max_diff(&eval(), &eval()), 0.0);
        let (a, b) = (model.encode_text(&tokens), model.encode_text(&tokens));
        assert!(
            max_diff(&a, &b) > 1e-4,
            "two training passes draw two masks"
        );
    }

    #[test]
    fn broken_adapters_are_refused_by_name() {
        let w = Tensor::zeros([6, 4], (Kind::Float, Device::Cpu));
        let a = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([6, 3], (Kind::Float, Device::Cpu));
        let named = |list: &[(&str, &Tensor)]| -> Vec<(String, Tensor)> {
            list.iter()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect()
        };
        let path = Path::new("adapter_model.safetensors");
        let lone = named(&[("m.weight", &w), ("m.lora_A.weight", &a)]);
        let err = merge_adapters(lone, 1.0, path).unwrap_err().to_string();
        assert!(
            err.contains("m has only one of lora_A.weight and lora_B.weight"),
            "{err}"
        );
        let misfit = named(&[
            ("m.weight", &w),
            ("m.lora_A.weight", &a),
            ("m.lora_B.weight", &b),
        ]);
        let err = merge_adapters(misfit, 1.0, path).unwrap_err().to_string();
        assert!(
            err.contains("does not fit its weight: m.weight [6, 4]"),
            "{err}"
        );
        let orphan = named(&[("n.lora_A.weight", &a), ("n.lora_B.weight", &b)]);
        let err = merge_adapters(orphan, 1.0, path).unwrap_err().to_string();
        assert!(err.contains("no n.weight to adapt"), "{err}");
    }
}

//! OpenCLIP's SigLIP state dicts (`ViT-*-SigLIP*`: a timm ViT trunk under `visual.trunk.`, an
//! OpenCLIP text Transformer under `text.`) mapped onto Hugging Face `SiglipModel` names — ours
//! for `model.kind = "siglip"` — and back.
//!
//! Beyond names, the layouts differ in four ways: timm fuses each block's q/k/v
//! (`attn.qkv`, `[3w, w]`), and its attention-pooling head has `q` and `kv` where HF's
//! `nn.MultiheadAttention` has one `in_proj` (`[q; k; v]`); OpenCLIP fuses the text blocks' q/k/v
//! (`attn.in_proj_*`); timm's position embedding carries a batch axis (`[1, N, w]`); and
//! OpenCLIP's `logit_scale`/`logit_bias` are 0-dim where HF's are `[1]`.
use super::openclip::{self, bad, int, layer_norm_eps, num, openclip_mlp_ratio};
use super::{SourceError, header, qkv};
use crate::model::{
    Activation, LogitHead, ModelKind, ModelSpec, TextConfig, TextPooling, VisionConfig, mlp_width,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

/// timm's SigLIP trunks by size: (size, width, depth, heads, MLP width, activation). The size
/// gives the heads (the weights do not); the rest must match for an export to name the trunk.
const SIZES: [(&str, usize, usize, usize, usize, Activation); 4] = [
    ("base", 768, 12, 12, 3072, Activation::Gelu),
    ("large", 1024, 24, 16, 4096, Activation::Gelu),
    ("so400m", 1152, 27, 16, 4304, Activation::Gelu),
    ("giantopt", 1536, 40, 16, 6144, Activation::GeluTanh),
];

/// The attention-pooled SigLIP trunks timm 1.0 registers (patch size, image size), by size.
const TRUNKS: [(&str, usize, usize); 16] = [
    ("base", 32, 256),
    ("base", 16, 224),
    ("base", 16, 256),
    ("base", 16, 384),
    ("base", 16, 512),
    ("large", 16, 256),
    ("large", 16, 384),
    ("large", 16, 512),
    ("so400m", 14, 224),
    ("so400m", 14, 378),
    ("so400m", 14, 384),
    ("so400m", 16, 256),
    ("so400m", 16, 384),
    ("so400m", 16, 512),
    ("giantopt", 16, 256),
    ("giantopt", 16, 384),
];

/// Whether an OpenCLIP config is a SigLIP one for [`read_spec`]: a timm SigLIP trunk
/// (`vit_<size>_patch<P>_siglip_…`) with OpenCLIP's own text Transformer (not an HF one).
pub(crate) fn is_siglip_config(v: &Value, t: &Value) -> bool {
    let trunk = v
        .get("timm_model_name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with("vit_") && n.contains("_siglip_"));
    trunk && t.get("hf_model_name").is_none_or(Value::is_null)
}

/// The model of an OpenCLIP SigLIP config (`path`), whose image tower is a timm trunk: its
/// dimensions come from the weights file beside it (the config names the trunk only), the heads
/// and activation from the trunk's size; the text tower from `text_cfg`, which must be SigLIP's
/// (bidirectional, pooled at the last position, biased projection).
pub(crate) fn read_spec(
    path: &Path,
    weights: &Path,
    m: &Value,
    v: &Value,
    t: &Value,
) -> Result<ModelSpec, SourceError> {
    let name = v
        .get("timm_model_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let size = name
        .strip_prefix("vit_")
        .and_then(|r| r.split_once("_patch"))
        .map(|(size, _)| size);
    let Some(&(_, _, _, heads, _, v_act)) = SIZES.iter().find(|s| Some(s.0) == size) else {
        return Err(bad(
            path,
            format!(
                "vision_cfg.timm_model_name = {name:?}: cliptrain reads timm's SigLIP trunks of \
                 sizes {}",
                SIZES.map(|s| s.0).join(", ")
            ),
        ));
    };
    let mut problems = Vec::new();
    if name.contains("_gap_")
        || !matches!(
            v.get("timm_pool").and_then(Value::as_str),
            None | Some("map")
        )
    {
        problems.push("vision_cfg: the trunk must pool with MAP (timm_pool = \"map\")".to_string());
    }
    if !matches!(v.get("timm_proj"), None | Some(Value::Null))
        && !matches!(
            v.get("timm_proj").and_then(Value::as_str),
            Some("none" | "")
        )
    {
        problems.push("vision_cfg.timm_proj must be \"none\"".into());
    }
    let is_true = |key: &str| t.get(key).and_then(Value::as_bool) == Some(true);
    if !is_true("no_causal_mask") {
        problems
            .push("text_cfg.no_causal_mask must be true (SigLIP's text is bidirectional)".into());
    }
    if t.get("pool_type").and_then(Value::as_str) != Some("last") {
        problems.push("text_cfg.pool_type must be \"last\"".into());
    }
    if !is_true("proj_bias") {
        problems.push(
            "text_cfg.proj_bias must be true (SigLIP's text head is a biased linear layer)".into(),
        );
    }
    let mut rest = t.clone();
    if let Some(o) = rest.as_object_mut() {
        for key in ["no_causal_mask", "pool_type", "proj_bias"] {
            o.remove(key);
        }
    }
    openclip::option_problems(&rest, "text_cfg", &mut problems);
    problems.retain(|p| !p.starts_with("text_cfg.act_kwargs"));
    let t_act = match t.get("act_kwargs").and_then(|a| a.get("approximate")) {
        None => Activation::Gelu,
        Some(a) if a.as_str() == Some("tanh") => Activation::GeluTanh,
        Some(a) => {
            problems.push(format!("text_cfg.act_kwargs.approximate = {a}"));
            Activation::Gelu
        }
    };
    if m.get("init_logit_bias").is_none_or(Value::is_null) {
        problems
            .push("model_cfg.init_logit_bias is missing (a SigLIP model has a logit bias)".into());
    }
    if !problems.is_empty() {
        return Err(bad(
            path,
            format!(
                "is not the SigLIP model cliptrain reads (HF SiglipModel's architecture): {}",
                problems.join("; ")
            ),
        ));
    }
    let shapes = hf_shapes(header::read_shapes(weights)?);
    let shape = |n: &str| shapes.get(n).cloned().unwrap_or_default();
    let from_weights = |what: &str| {
        bad(
            weights,
            format!(
                "has no (or a malformed) {what}; it does not hold the timm SigLIP trunk that {} names",
                path.display()
            ),
        )
    };
    let (patch, pos) = (
        shape("vision_model.embeddings.patch_embedding.weight"),
        shape("vision_model.embeddings.position_embedding.weight"),
    );
    let [width, 3, p, p2] = patch[..] else {
        return Err(from_weights(
            "patch embedding visual.trunk.patch_embed.proj.weight",
        ));
    };
    let grid = (pos.first().copied().unwrap_or(0) as f64).sqrt() as u64;
    if p != p2 || grid == 0 || pos != [grid * grid, width] {
        return Err(from_weights("square patch grid (visual.trunk.pos_embed)"));
    }
    let layers = (0..)
        .take_while(|i| {
            shapes.contains_key(&format!(
                "vision_model.encoder.layers.{i}.layer_norm1.weight"
            ))
        })
        .count();
    let mlp = shape("vision_model.encoder.layers.0.mlp.fc1.weight");
    let [mlp, _] = mlp[..] else {
        return Err(from_weights("MLP (visual.trunk.blocks.0.mlp.fc1.weight)"));
    };
    let image_size = (grid * p) as usize;
    let stated = int(path, v, "vision_cfg", "image_size", image_size as f64)?;
    if stated != image_size {
        return Err(bad(
            path,
            format!(
                "vision_cfg.image_size = {stated}, but the weights' {grid}x{grid} grid of {p}-pixel \
                 patches is {image_size} pixels"
            ),
        ));
    }
    let eps = layer_norm_eps(t).unwrap_or(1e-5);
    if eps != 1e-6 {
        return Err(bad(
            path,
            format!(
                "text_cfg.norm_kwargs.eps = {eps}: timm's SigLIP trunk uses 1e-6 and cliptrain one \
                 eps for both towers"
            ),
        ));
    }
    let (width, tw) = (width as usize, int(path, t, "text_cfg", "width", 512.0)?);
    let vocab_size = int(path, t, "text_cfg", "vocab_size", 49408.0)?;
    Ok(ModelSpec {
        kind: ModelKind::Siglip,
        embed_dim: int(path, m, "model_cfg", "embed_dim", width as f64)?,
        activation: v_act,
        layer_norm_eps: eps,
        vision: VisionConfig {
            image_size,
            patch_size: p as usize,
            width,
            layers,
            heads,
            mlp_ratio: mlp as f64 / width.max(1) as f64,
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size,
            context_length: int(path, t, "text_cfg", "context_length", 77.0)?,
            width: tw,
            layers: int(path, t, "text_cfg", "layers", 12.0)?,
            heads: int(path, t, "text_cfg", "heads", 8.0)?,
            mlp_ratio: openclip_mlp_ratio(tw, num(path, t, "text_cfg", "mlp_ratio", 4.0)?),
            activation: (t_act != v_act).then_some(t_act),
            pooling: TextPooling::Last,
        },
        eot_id: t
            .get("eos_id")
            .and_then(Value::as_i64)
            .unwrap_or(vocab_size as i64 - 1),
        head: LogitHead::Siglip,
    })
}

/// The `model_cfg` of an OpenCLIP SigLIP config for `spec`: refused unless its image tower is
/// one of timm's named trunks (OpenCLIP builds the trunk from the name alone) with timm's
/// activation.
pub(crate) fn model_cfg(spec: &ModelSpec, logit_bias: f64) -> Result<Value, String> {
    let (v, t) = (&spec.vision, &spec.text);
    let mlp = mlp_width(v.width, v.mlp_ratio);
    let size = SIZES
        .iter()
        .find(|s| (s.1, s.2, s.3, s.4) == (v.width, v.layers, v.heads, mlp));
    let trunk = size.and_then(|s| {
        TRUNKS
            .iter()
            .find(|(n, p, r)| *n == s.0 && (*p, *r) == (v.patch_size, v.image_size))
    });
    let (Some(&(size, .., act)), Some(_)) = (size, trunk) else {
        return Err(format!(
            "OpenCLIP builds a SigLIP image tower only as one of timm's named trunks, and this \
             one (width {}, {} layers, {} heads, MLP {mlp}, {}-pixel patches at {} pixels) is \
             none of them ({}); export it with `cliptrain export hf`",
            v.width,
            v.layers,
            v.heads,
            v.patch_size,
            v.image_size,
            TRUNKS
                .map(|(n, p, r)| format!("vit_{n}_patch{p}_siglip_{r}"))
                .join(", ")
        ));
    };
    if spec.activation != act {
        return Err(format!(
            "timm's {size} SigLIP trunk runs {act:?}, this model's image tower {:?} (Hugging \
             Face's SigLIP uses GELU's tanh approximation throughout); export it with `cliptrain \
             export hf`",
            spec.activation
        ));
    }
    let t_act = t.activation.unwrap_or(spec.activation);
    let mut text = openclip::text_tower_cfg(t);
    text["no_causal_mask"] = json!(true);
    text["proj_bias"] = json!(true);
    text["pool_type"] = json!("last");
    text["norm_kwargs"] = json!({"eps": spec.layer_norm_eps});
    match t_act {
        Activation::Gelu => {}
        Activation::GeluTanh => text["act_kwargs"] = json!({"approximate": "tanh"}),
        Activation::QuickGelu => {
            return Err(
                "OpenCLIP's SigLIP text tower cannot run QuickGELU; export it with \
                        `cliptrain export hf`"
                    .into(),
            );
        }
    }
    Ok(json!({
        "embed_dim": spec.embed_dim,
        "init_logit_bias": logit_bias,
        "custom_text": true,
        "vision_cfg": {
            "image_size": v.image_size,
            "timm_model_name": format!("vit_{size}_patch{}_siglip_{}", v.patch_size, v.image_size),
            "timm_model_pretrained": false,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": text,
    }))
}

/// Whole-tensor renames: (OpenCLIP, ours).
const TOP: [(&str, &str); 17] = [
    (
        "visual.trunk.patch_embed.proj.weight",
        "vision_model.embeddings.patch_embedding.weight",
    ),
    (
        "visual.trunk.patch_embed.proj.bias",
        "vision_model.embeddings.patch_embedding.bias",
    ),
    (
        "visual.trunk.norm.weight",
        "vision_model.post_layernorm.weight",
    ),
    ("visual.trunk.norm.bias", "vision_model.post_layernorm.bias"),
    ("visual.trunk.attn_pool.latent", "vision_model.head.probe"),
    (
        "visual.trunk.attn_pool.proj.weight",
        "vision_model.head.attention.out_proj.weight",
    ),
    (
        "visual.trunk.attn_pool.proj.bias",
        "vision_model.head.attention.out_proj.bias",
    ),
    (
        "visual.trunk.attn_pool.norm.weight",
        "vision_model.head.layernorm.weight",
    ),
    (
        "visual.trunk.attn_pool.norm.bias",
        "vision_model.head.layernorm.bias",
    ),
    (
        "visual.trunk.attn_pool.mlp.fc1.weight",
        "vision_model.head.mlp.fc1.weight",
    ),
    (
        "visual.trunk.attn_pool.mlp.fc1.bias",
        "vision_model.head.mlp.fc1.bias",
    ),
    (
        "visual.trunk.attn_pool.mlp.fc2.weight",
        "vision_model.head.mlp.fc2.weight",
    ),
    (
        "visual.trunk.attn_pool.mlp.fc2.bias",
        "vision_model.head.mlp.fc2.bias",
    ),
    (
        "text.token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    (
        "text.positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
    ("text.ln_final.weight", "text_model.final_layer_norm.weight"),
    ("text.ln_final.bias", "text_model.final_layer_norm.bias"),
];

/// The text head, position embedding and scalars, whose layouts change.
const TEXT_HEAD: [(&str, &str); 2] = [
    ("text.text_projection.weight", "text_model.head.weight"),
    ("text.text_projection.bias", "text_model.head.bias"),
];
const POS: (&str, &str) = (
    "visual.trunk.pos_embed",
    "vision_model.embeddings.position_embedding.weight",
);
const SCALARS: [&str; 2] = ["logit_scale", "logit_bias"];
const POOL_Q: &str = "visual.trunk.attn_pool.q.";
const POOL_KV: &str = "visual.trunk.attn_pool.kv.";
const POOL_IN: &str = "vision_model.head.attention.in_proj_";

/// Block renames, weight and bias each: (timm, OpenCLIP text, ours).
const BLOCK: [(&str, &str, &str); 5] = [
    ("norm1", "ln_1", "layer_norm1"),
    ("norm2", "ln_2", "layer_norm2"),
    ("attn.proj", "attn.out_proj", "self_attn.out_proj"),
    ("mlp.fc1", "mlp.c_fc", "mlp.fc1"),
    ("mlp.fc2", "mlp.c_proj", "mlp.fc2"),
];

/// Block prefixes and fused-q/k/v leaf: (OpenCLIP, ours, fused leaf without `weight`/`bias`).
const TOWERS: [(&str, &str, &str); 2] = [
    (
        "visual.trunk.blocks.",
        "vision_model.encoder.layers.",
        "attn.qkv.",
    ),
    (
        "text.transformer.resblocks.",
        "text_model.encoder.layers.",
        "attn.in_proj_",
    ),
];

/// Whether a state dict's names are OpenCLIP's timm-trunk SigLIP layout.
pub fn is_timm_siglip<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|n| n.starts_with("visual.trunk.attn_pool."))
}

/// How one OpenCLIP tensor becomes ours (the pooling head's q/kv pair aside).
enum Layout {
    /// Renamed only.
    Same(String),
    /// timm's `[1, N, w]` position embedding → `[N, w]`.
    DropBatch(String),
    /// A 0-dim scalar → `[1]`.
    Scalar(String),
    /// A fused `[3w, …]` q/k/v → three `[w, …]` tensors: `{base}self_attn.{q,k,v}_proj.{kind}`.
    SplitQkv { base: String, kind: String },
}

/// Where an OpenCLIP tensor goes; `None` when it has no counterpart (or is a pooling q/kv).
fn rename(name: &str, shape: &[i64]) -> Option<Layout> {
    if let Some((_, ours)) = TOP.iter().chain(&TEXT_HEAD).find(|(oc, _)| *oc == name) {
        return Some(Layout::Same(ours.to_string()));
    }
    if name == POS.0 && shape.len() == 3 && shape[0] == 1 {
        return Some(Layout::DropBatch(POS.1.to_string()));
    }
    if SCALARS.contains(&name) && shape.is_empty() {
        return Some(Layout::Scalar(name.to_string()));
    }
    TOWERS.iter().find_map(|(oc_prefix, our_prefix, fused)| {
        let (layer, leaf) = name.strip_prefix(oc_prefix)?.split_once('.')?;
        let base = format!("{our_prefix}{layer}.");
        if let Some(kind) = leaf.strip_prefix(fused) {
            return (shape.first()? % 3 == 0).then(|| Layout::SplitQkv {
                base,
                kind: kind.to_string(),
            });
        }
        let text = *oc_prefix == TOWERS[1].0;
        BLOCK.iter().find_map(|(timm, oc_text, ours)| {
            let suffix = leaf
                .strip_prefix(if text { oc_text } else { timm })?
                .strip_prefix('.')?;
            Some(Layout::Same(format!("{base}{ours}.{suffix}")))
        })
    })
}

/// OpenCLIP SigLIP tensors to ours. Names with no counterpart (and shapes that do not split)
/// are kept under their own name, so a load reports them as unexpected.
pub fn to_hf(tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut pool: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut out = Vec::with_capacity(tensors.len() + 32);
    for (name, t) in tensors {
        if name.starts_with(POOL_Q) || name.starts_with(POOL_KV) {
            pool.insert(name, t);
            continue;
        }
        match rename(&name, &t.size()) {
            Some(Layout::Same(ours)) => out.push((ours, t)),
            Some(Layout::DropBatch(ours)) => out.push((ours, t.squeeze_dim(0))),
            Some(Layout::Scalar(ours)) => out.push((ours, t.reshape([1]))),
            Some(Layout::SplitQkv { base, kind }) => match qkv::split(&base, &kind, &t) {
                Some(parts) => out.extend(parts),
                None => out.push((name, t)),
            },
            None => out.push((name, t)),
        }
    }
    // The pooling head's q and kv become one in_proj = [q; k; v], as nn.MultiheadAttention.
    for kind in ["weight", "bias"] {
        let q = pool.remove(&format!("{POOL_Q}{kind}"));
        let kv = pool.remove(&format!("{POOL_KV}{kind}"));
        match (q, kv) {
            (Some(q), Some(kv)) if pool_pair_fits(&q.size(), &kv.size()) => {
                out.push((format!("{POOL_IN}{kind}"), Tensor::cat(&[q, kv], 0)));
            }
            (q, kv) => {
                out.extend(q.map(|t| (format!("{POOL_Q}{kind}"), t)));
                out.extend(kv.map(|t| (format!("{POOL_KV}{kind}"), t)));
            }
        }
    }
    out.extend(pool);
    out
}

/// Whether a pooling `q` and `kv` stack into one `[3w, …]` in_proj.
fn pool_pair_fits(q: &[i64], kv: &[i64]) -> bool {
    !q.is_empty() && q.len() == kv.len() && kv[0] == 2 * q[0] && q[1..] == kv[1..]
}

/// A safetensors header's shapes under our names, for checking a folder's dimensions before
/// loading it (what [`to_hf`] would produce, without reading any data).
pub fn hf_shapes(shapes: BTreeMap<String, Vec<u64>>) -> BTreeMap<String, Vec<u64>> {
    let mut out = BTreeMap::new();
    for (name, shape) in &shapes {
        let signed: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        match rename(name, &signed) {
            Some(Layout::Same(ours)) => {
                out.insert(ours, shape.clone());
            }
            Some(Layout::DropBatch(ours)) => {
                out.insert(ours, shape[1..].to_vec());
            }
            Some(Layout::Scalar(ours)) => {
                out.insert(ours, vec![1]);
            }
            Some(Layout::SplitQkv { base, kind }) => {
                for n in qkv::names(&base, &kind) {
                    out.insert(n, qkv::split_shape(shape));
                }
            }
            None => {}
        }
    }
    for kind in ["weight", "bias"] {
        let q = shapes.get(&format!("{POOL_Q}{kind}"));
        let kv = shapes.get(&format!("{POOL_KV}{kind}"));
        // The same rule as `to_hf`: a pair that does not stack (a 0-dim or mismatched header
        // entry) maps to nothing, and the shape check names the missing in_proj.
        if let (Some(q), Some(kv)) = (q, kv) {
            let signed = |s: &[u64]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
            if pool_pair_fits(&signed(q), &signed(kv)) {
                let mut fused = q.clone();
                fused[0] += kv[0];
                out.insert(format!("{POOL_IN}{kind}"), fused);
            }
        }
    }
    out
}

/// Our SigLIP tensors to OpenCLIP's names and layouts (the inverse of [`to_hf`]).
pub fn from_hf(tensors: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let name = name.as_str();
        if let Some((oc, _)) = TOP.iter().chain(&TEXT_HEAD).find(|(_, ours)| *ours == name) {
            out.push((oc.to_string(), t.shallow_clone()));
        } else if name == POS.1 {
            out.push((POS.0.to_string(), t.unsqueeze(0)));
        } else if SCALARS.contains(&name) {
            out.push((name.to_string(), t.reshape([] as [i64; 0])));
        } else if let Some(kind) = name.strip_prefix(POOL_IN) {
            let w = t.size()[0] / 3;
            out.push((format!("{POOL_Q}{kind}"), t.narrow(0, 0, w).contiguous()));
            out.push((
                format!("{POOL_KV}{kind}"),
                t.narrow(0, w, 2 * w).contiguous(),
            ));
        } else {
            out.extend(block_from_hf(name, t, &by_name));
        }
    }
    out
}

/// An encoder-layer tensor of ours under OpenCLIP's names: q/k/v fuse at `q_proj` (k and v are
/// read with it), the other leaves rename.
fn block_from_hf(
    name: &str,
    t: &Tensor,
    by_name: &BTreeMap<&str, &Tensor>,
) -> Vec<(String, Tensor)> {
    for (oc_prefix, our_prefix, fused) in TOWERS {
        let Some((layer, leaf)) = name
            .strip_prefix(our_prefix)
            .and_then(|r| r.split_once('.'))
        else {
            continue;
        };
        let base = format!("{oc_prefix}{layer}.");
        if let Some(kind) = leaf.strip_prefix("self_attn.q_proj.") {
            let stacked = qkv::fuse(by_name, &format!("{our_prefix}{layer}."), kind);
            return vec![(format!("{base}{fused}{kind}"), stacked)];
        }
        let text = oc_prefix == TOWERS[1].0;
        for (timm, oc_text, ours) in BLOCK {
            if let Some(suffix) = leaf.strip_prefix(ours).and_then(|s| s.strip_prefix('.')) {
                let oc = if text { oc_text } else { timm };
                return vec![(format!("{base}{oc}.{suffix}"), t.shallow_clone())];
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
#[path = "timm_siglip_tests.rs"]
mod tests;

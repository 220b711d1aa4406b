//! OpenCLIP folders: `open_clip_config.json` + `open_clip_model.safetensors`, as
//! `open_clip.create_model_and_transforms('local-dir:' + DIR)` reads them, mapped onto our
//! (Hugging Face) names and back.
//!
//! The state dicts differ in three ways beyond names: OpenCLIP fuses the attention input
//! projections (`attn.in_proj_weight` = q, k, v stacked), stores both projections transposed
//! (`visual.proj`, `text_projection` are `[width, embed]`), and names the blocks `resblocks`.
use super::{LoadedModel, SourceError, qkv, timm_siglip, write_json};
use crate::model::{
    Activation, LogitHead, ModelKind, ModelSpec, TextConfig, TextPooling, VisionConfig, mlp_width,
};
use crate::text::TextClean;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

pub const CONFIG: &str = "open_clip_config.json";
pub const WEIGHTS: &str = "open_clip_model.safetensors";

/// Whole-tensor renames outside the blocks: (OpenCLIP, ours, transposed).
const TOP: [(&str, &str, bool); 14] = [
    (
        "visual.conv1.weight",
        "vision_model.embeddings.patch_embedding.weight",
        false,
    ),
    (
        "visual.class_embedding",
        "vision_model.embeddings.class_embedding",
        false,
    ),
    (
        "visual.positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
        false,
    ),
    (
        "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.weight",
        false,
    ),
    (
        "visual.ln_pre.bias",
        "vision_model.pre_layrnorm.bias",
        false,
    ),
    (
        "visual.ln_post.weight",
        "vision_model.post_layernorm.weight",
        false,
    ),
    (
        "visual.ln_post.bias",
        "vision_model.post_layernorm.bias",
        false,
    ),
    ("visual.proj", "visual_projection.weight", true),
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
        false,
    ),
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
        false,
    ),
    (
        "ln_final.weight",
        "text_model.final_layer_norm.weight",
        false,
    ),
    ("ln_final.bias", "text_model.final_layer_norm.bias", false),
    ("text_projection", "text_projection.weight", true),
    ("logit_scale", "logit_scale", false),
];

/// Renames inside one block (`….resblocks.N.` ↔ `….encoder.layers.N.`), weight and bias each.
const BLOCK: [(&str, &str); 5] = [
    ("attn.out_proj", "self_attn.out_proj"),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
];

/// Tower prefixes: (OpenCLIP, ours).
const TOWERS: [(&str, &str); 2] = [
    (
        "visual.transformer.resblocks.",
        "vision_model.encoder.layers.",
    ),
    ("transformer.resblocks.", "text_model.encoder.layers."),
];

/// OpenCLIP tensors to ours. Names with no counterpart (e.g. an `attn_mask` buffer) are kept
/// under their own name, so a load reports them as unexpected.
pub fn to_hf(tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut out = Vec::with_capacity(tensors.len() + 16);
    for (name, t) in tensors {
        // [3w, ...] → q, k, v; a shape that does not split stays fused and unexpected.
        if let Some(parts) = in_proj(&name).and_then(|(base, kind)| qkv::split(&base, kind, &t)) {
            out.extend(parts);
            continue;
        }
        match hf_name(&name) {
            Some((ours, true)) => out.push((ours, t.tr().contiguous())),
            Some((ours, false)) => out.push((ours, t)),
            None => out.push((name, t)),
        }
    }
    out
}

/// A safetensors header's shapes under our names (the fused attention inputs left out), for
/// checking a folder's dimensions before loading it.
pub(crate) fn hf_shapes(shapes: BTreeMap<String, Vec<u64>>) -> BTreeMap<String, Vec<u64>> {
    shapes
        .into_iter()
        .filter_map(|(name, shape)| match hf_name(&name)? {
            (ours, true) => Some((ours, shape.into_iter().rev().collect())),
            (ours, false) => Some((ours, shape)),
        })
        .collect()
}

/// `(our block prefix, weight|bias)` of a fused `attn.in_proj_*` name.
fn in_proj(name: &str) -> Option<(String, &str)> {
    TOWERS.iter().find_map(|(oc_prefix, our_prefix)| {
        let (layer, leaf) = name.strip_prefix(oc_prefix)?.split_once('.')?;
        let kind = leaf.strip_prefix("attn.in_proj_")?;
        Some((format!("{our_prefix}{layer}."), kind))
    })
}

/// Our name for an OpenCLIP tensor outside the fused attention inputs, and whether it is
/// stored transposed; `None` when it has no counterpart.
fn hf_name(name: &str) -> Option<(String, bool)> {
    if name == "logit_bias" {
        return Some((name.to_string(), false));
    }
    if let Some((_, ours, tr)) = TOP.iter().find(|(oc, _, _)| *oc == name) {
        return Some((ours.to_string(), *tr));
    }
    TOWERS.iter().find_map(|(oc_prefix, our_prefix)| {
        let (layer, leaf) = name.strip_prefix(oc_prefix)?.split_once('.')?;
        BLOCK.iter().find_map(|(oc, ours)| {
            let suffix = leaf.strip_prefix(oc)?.strip_prefix('.')?;
            Some((format!("{our_prefix}{layer}.{ours}.{suffix}"), false))
        })
    })
}

/// Our tensors to OpenCLIP's names and layouts (q/k/v fused, projections transposed).
pub fn from_hf(tensors: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let by_name: BTreeMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if let Some((oc, _, tr)) = TOP.iter().find(|(_, ours, _)| ours == name) {
            out.push((
                oc.to_string(),
                if *tr {
                    t.tr().contiguous()
                } else {
                    t.shallow_clone()
                },
            ));
            continue;
        }
        if name == "logit_bias" {
            out.push((name.clone(), t.shallow_clone()));
            continue;
        }
        for (oc_prefix, our_prefix) in TOWERS {
            let Some(rest) = name.strip_prefix(our_prefix) else {
                continue;
            };
            let Some((layer, leaf)) = rest.split_once('.') else {
                continue;
            };
            let base = format!("{oc_prefix}{layer}.");
            if let Some(kind) = leaf.strip_prefix("self_attn.q_proj.") {
                let fused = qkv::fuse(&by_name, &format!("{our_prefix}{layer}."), kind);
                out.push((format!("{base}attn.in_proj_{kind}"), fused));
            }
            for (oc, ours) in BLOCK {
                if let Some(suffix) = leaf.strip_prefix(ours).and_then(|s| s.strip_prefix('.')) {
                    out.push((format!("{base}{oc}.{suffix}"), t.shallow_clone()));
                }
            }
        }
    }
    out
}

pub(super) fn bad(path: &Path, reason: String) -> SourceError {
    SourceError::BadConfig {
        path: path.to_path_buf(),
        reason,
    }
}

pub(super) fn num(
    path: &Path,
    s: &Value,
    name: &str,
    key: &str,
    default: f64,
) -> Result<f64, SourceError> {
    match s.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad(path, format!("{name}.{key} = {v} is not a number"))),
    }
}

/// Refuses OpenCLIP models our towers cannot represent: first whole families by the key that
/// marks them (so the message says what the model is and where to go instead), then any other
/// option, every one named.
fn check_supported(path: &Path, m: &Value, v: &Value, t: &Value) -> Result<(), SourceError> {
    let text_of = |s: &Value, key: &str| s.get(key).and_then(Value::as_str).map(String::from);
    let family = if m.get("multimodal_cfg").is_some_and(|c| !c.is_null()) {
        Some(
            "has a multimodal_cfg: a CoCa model (contrastive + captioning decoder); cliptrain \
              trains two-tower CLIP/SigLIP models only"
                .to_string(),
        )
    } else if v.get("layers").is_some_and(Value::is_array) {
        Some(
            "vision_cfg.layers is a list: a ResNet image tower (RN50, RN101, ...); cliptrain's \
              image towers are ViTs"
                .to_string(),
        )
    } else if let Some(name) = text_of(t, "hf_model_name") {
        Some(format!(
            "text_cfg.hf_model_name = {name:?}: a Hugging Face text tower (RoBERTa, XLM-R, \
             mT5, NLLB); cliptrain's text tower is CLIP's Transformer"
        ))
    } else {
        text_of(v, "timm_model_name").map(|name| {
            format!(
            "vision_cfg.timm_model_name = {name:?}: a timm image tower (EVA, ConvNeXt, ViTamin, \
             MobileCLIP, PE, Swin); cliptrain builds OpenCLIP's own ViT, and timm's SigLIP \
             trunks (vit_<size>_patch<P>_siglip_<R>) as model.kind = \"siglip\""
        )
        })
    };
    if let Some(reason) = family {
        return Err(bad(path, format!("cannot be loaded: {reason}")));
    }
    let mut problems = Vec::new();
    for (s, name) in [(v, "vision_cfg"), (t, "text_cfg")] {
        option_problems(s, name, &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(bad(
            path,
            format!(
                "uses OpenCLIP options cliptrain's CLIP model does not have: {}{}",
                problems.join(", "),
                if problems.iter().any(|p| p.contains("no_ln_pre")) {
                    " (OpenCLIP's CLIPA models)"
                } else {
                    ""
                }
            ),
        ))
    }
}

/// The options of one tower section that change its architecture away from OpenCLIP's plain
/// ViT/text Transformer.
pub(super) fn option_problems(s: &Value, name: &str, problems: &mut Vec<String>) {
    let allowed_false = [
        "attentional_pool",
        "no_ln_pre",
        "final_ln_after_pool",
        "embed_cls",
        "no_causal_mask",
        "proj_bias",
        "qk_norm",
        "scaled_cosine_attn",
        "scale_heads",
        "scale_attn_inner",
        "scale_attn",
        "scale_fc",
        "output_tokens",
    ];
    for key in allowed_false {
        if s.get(key).and_then(Value::as_bool) == Some(true) {
            problems.push(format!("{name}.{key} = true"));
        }
    }
    for (key, what) in [("ls_init_value", " (LayerScale)"), ("act_kwargs", "")] {
        if s.get(key).is_some_and(|v| !v.is_null()) {
            problems.push(format!("{name}.{key} is set{what}"));
        }
    }
    // The text tower's pool_type is read (and refused when unknown) by `pool_type`.
    let pool = s.get("pool_type").and_then(Value::as_str);
    if name != "text_cfg" && !matches!(pool, None | Some("tok") | Some("argmax") | Some("eos")) {
        problems.push(format!("{name}.pool_type = {pool:?}"));
    }
    if !matches!(
        s.get("proj_type").and_then(Value::as_str),
        None | Some("linear")
    ) {
        problems.push(format!("{name}.proj_type is not \"linear\""));
    }
}

/// OpenCLIP's MLP width, `int(width * mlp_ratio)` (truncated, not rounded: bigG's 4.9231 or
/// SO400M's 3.7362 land just above or below an integer), as the ratio our towers take — one
/// that [`mlp_width`] rounds back to exactly that width.
pub(super) fn openclip_mlp_ratio(width: usize, ratio: f64) -> f64 {
    let hidden = (width as f64 * ratio).floor();
    hidden / width.max(1) as f64
}

/// The `mlp_ratio` to write for a tower whose MLP is `mlp_width(width, ratio)` wide, such that
/// OpenCLIP's `int(width * mlp_ratio)` gives that width back: the plain quotient when its
/// product truncates right (the usual case, and a readable number), else a quarter above.
pub(super) fn export_mlp_ratio(width: usize, ratio: f64) -> f64 {
    let (hidden, w) = (mlp_width(width, ratio) as f64, width.max(1) as f64);
    let plain = hidden / w;
    if (w * plain).floor() == hidden {
        plain
    } else {
        (hidden + 0.25) / w
    }
}

pub(super) fn layer_norm_eps(s: &Value) -> Option<f64> {
    s.get("norm_kwargs")?.get("eps")?.as_f64()
}

/// The model (and preprocessing mean/std, when stated) of an `open_clip_config.json`. Text
/// pools per `text_cfg.pool_type` (OpenCLIP's default `argmax`; see `pool_type`), `eos` at
/// `text_cfg.eos_id`, else at the last id of the vocabulary; an `init_logit_bias` makes it a
/// SigLIP model.
pub fn read_config(
    path: &Path,
    weights: &Path,
) -> Result<(ModelSpec, Option<super::MeanStd>), SourceError> {
    let json = super::read_json(path)?;
    let empty = json!({});
    let m = match json.get("model_cfg") {
        Some(_) => super::section(path, &json, "model_cfg", &empty)?,
        None => &json,
    };
    let v = super::section(path, m, "vision_cfg", &empty)?;
    let t = super::section(path, m, "text_cfg", &empty)?;
    let model = match timm_siglip::is_siglip_config(v, t) {
        true => timm_siglip::read_spec(path, weights, m, v, t)?,
        false => clip_spec(path, m, v, t)?,
    };
    let p = json.get("preprocess_cfg").unwrap_or(&empty);
    let triple = |key: &str| -> Option<[f64; 3]> {
        match p.get(key)?.as_array()?.as_slice() {
            [r, g, b] => Some([r.as_f64()?, g.as_f64()?, b.as_f64()?]),
            _ => None,
        }
    };
    Ok((model, triple("mean").zip(triple("std"))))
}

/// The caption cleaning an `open_clip_config.json` states (`text_cfg.tokenizer_kwargs.clean`:
/// `lower`, `whitespace` or `canonicalize`, as open_clip's tokenizers take it); `None` when it
/// states none.
pub fn read_text_clean(path: &Path) -> Result<Option<TextClean>, SourceError> {
    let json = super::read_json(path)?;
    let m = json.get("model_cfg").unwrap_or(&json);
    let clean = m
        .get("text_cfg")
        .and_then(|t| t.get("tokenizer_kwargs"))
        .and_then(|k| k.get("clean"));
    match clean {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_str() {
            Some("lower") => Ok(Some(TextClean::Clip)),
            Some("whitespace") => Ok(Some(TextClean::Whitespace)),
            Some("canonicalize") => Ok(Some(TextClean::Canonicalize)),
            _ => Err(bad(
                path,
                format!(
                    "text_cfg.tokenizer_kwargs.clean = {v}: cliptrain cleans captions as \
                     open_clip's \"lower\", \"whitespace\" or \"canonicalize\""
                ),
            )),
        },
    }
}

/// open_clip's name for a (resolved) caption cleaning.
fn clean_name(clean: TextClean) -> &'static str {
    match clean {
        TextClean::Auto | TextClean::Clip => "lower",
        TextClean::Whitespace => "whitespace",
        // open_clip's nearest: it also turns `_` into a space and applies ftfy's fixes.
        TextClean::Canonicalize | TextClean::Siglip | TextClean::SiglipCased => "canonicalize",
    }
}

/// `key` of a config section as a count, `default` when absent.
pub(super) fn int(
    path: &Path,
    s: &Value,
    name: &str,
    key: &str,
    default: f64,
) -> Result<usize, SourceError> {
    let x = num(path, s, name, key, default)?;
    if x < 0.0 || x.fract() != 0.0 {
        return Err(bad(
            path,
            format!("{name}.{key} = {x} is not a non-negative integer"),
        ));
    }
    Ok(x as usize)
}

/// The model of an OpenCLIP `CLIP` config: OpenCLIP's own ViT and text Transformer.
fn clip_spec(path: &Path, m: &Value, v: &Value, t: &Value) -> Result<ModelSpec, SourceError> {
    check_supported(path, m, v, t)?;
    let int = |s: &Value, name: &str, key: &str, d: f64| int(path, s, name, key, d);
    let vw = int(v, "vision_cfg", "width", 768.0)?;
    let head_width = int(v, "vision_cfg", "head_width", 64.0)?.max(1);
    let eps_v = layer_norm_eps(v).unwrap_or(1e-5);
    if eps_v != layer_norm_eps(t).unwrap_or(1e-5) {
        return Err(bad(
            path,
            "vision and text norm_kwargs.eps differ; cliptrain uses one".into(),
        ));
    }
    let vocab_size = int(t, "text_cfg", "vocab_size", 49408.0)?;
    let tw = int(t, "text_cfg", "width", 512.0)?;
    Ok(ModelSpec {
        kind: ModelKind::Clip,
        embed_dim: int(m, "model_cfg", "embed_dim", 512.0)?,
        activation: if m.get("quick_gelu").and_then(Value::as_bool) == Some(true) {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        },
        layer_norm_eps: eps_v,
        vision: VisionConfig {
            image_size: int(v, "vision_cfg", "image_size", 224.0)?,
            patch_size: int(v, "vision_cfg", "patch_size", 16.0)?,
            width: vw,
            layers: int(v, "vision_cfg", "layers", 12.0)?,
            heads: vw / head_width,
            mlp_ratio: openclip_mlp_ratio(vw, num(path, v, "vision_cfg", "mlp_ratio", 4.0)?),
            // A training choice, not part of a saved model.
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size,
            context_length: int(t, "text_cfg", "context_length", 77.0)?,
            width: tw,
            layers: int(t, "text_cfg", "layers", 12.0)?,
            heads: int(t, "text_cfg", "heads", 8.0)?,
            mlp_ratio: openclip_mlp_ratio(tw, num(path, t, "text_cfg", "mlp_ratio", 4.0)?),
            activation: None,
            pooling: pool_type(path, t)?,
        },
        eot_id: match t.get("eos_id").and_then(Value::as_i64) {
            Some(id) => id,
            None => vocab_size as i64 - 1,
        },
        head: if m.get("init_logit_bias").is_some_and(|b| !b.is_null()) {
            LogitHead::Siglip
        } else {
            LogitHead::Clip
        },
    })
}

/// `text_cfg.pool_type`: OpenCLIP's `argmax` (its default), `eos` and `last`; `first`, `avg` and
/// `none` pool in ways the CLIP text tower does not.
fn pool_type(path: &Path, t: &Value) -> Result<TextPooling, SourceError> {
    match t.get("pool_type") {
        None | Some(Value::Null) => Ok(TextPooling::Argmax),
        Some(v) => match v.as_str() {
            Some("argmax") => Ok(TextPooling::Argmax),
            Some("eos") => Ok(TextPooling::Eot),
            Some("last") => Ok(TextPooling::Last),
            _ => Err(bad(
                path,
                format!(
                    "text_cfg.pool_type = {v}: cliptrain pools text by \"argmax\", \"eos\" or \
                     \"last\""
                ),
            )),
        },
    }
}

/// The dimensions of an OpenCLIP `text_cfg` (both exporters add their tower's other keys).
pub(super) fn text_tower_cfg(t: &TextConfig) -> Value {
    json!({
        "context_length": t.context_length,
        "vocab_size": t.vocab_size,
        "width": t.width,
        "heads": t.heads,
        "layers": t.layers,
        "mlp_ratio": export_mlp_ratio(t.width, t.mlp_ratio),
    })
}

/// The `open_clip_config.json` of a model. CLIP: text pooling is `eos` at our end-of-text id
/// (first EOT, as cliptrain pools); `hf_tokenizer_name` makes
/// `open_clip.get_tokenizer('local-dir:…')` read the folder's `tokenizer.json` when one is
/// written. SigLIP: OpenCLIP's `CustomTextCLIP` with a timm trunk (see [`timm_siglip`]).
/// Refused (the message says why) where OpenCLIP has no such architecture.
pub fn config_json(loaded: &LoadedModel, with_tokenizer: bool) -> Result<Value, SourceError> {
    let m = &loaded.source.spec;
    let d = loaded.source.config().data;
    let dir = loaded.source.dir.display();
    let unsupported = |why: String| SourceError::Unsupported(format!("{dir}: {why}"));
    let mut model_cfg = match m.kind {
        ModelKind::Siglip => {
            let bias = loaded
                .model
                .logit_bias()
                .map_or(-10.0, |b| b.double_value(&[0]));
            timm_siglip::model_cfg(m, bias).map_err(unsupported)?
        }
        ModelKind::Clip => clip_model_cfg(loaded).map_err(unsupported)?,
    };
    if let Some(tok) = loaded.source.tokenizer.as_ref().filter(|_| with_tokenizer) {
        model_cfg["text_cfg"]["hf_tokenizer_name"] = json!("tokenizer.json");
        // open_clip's HFTokenizer cleans with "whitespace" unless told: state ours.
        model_cfg["text_cfg"]["tokenizer_kwargs"] =
            json!({"clean": clean_name(tok.specials().clean)});
    }
    Ok(json!({
        "model_cfg": model_cfg,
        "preprocess_cfg": super::preprocess::openclip_json(
            d.resize_rule(),
            loaded.source.spec.vision.image_size,
            d.image_mean,
            d.image_std,
        )?,
    }))
}

/// The `model_cfg` of a CLIP model: OpenCLIP's `CLIP` with its own ViT.
fn clip_model_cfg(loaded: &LoadedModel) -> Result<Value, String> {
    let m = &loaded.source.spec;
    let (v, t) = (&m.vision, &m.text);
    // OpenCLIP's CLIP towers know only GELU and QuickGELU, one for both.
    if m.activation == Activation::GeluTanh {
        return Err(
            "it uses model.activation = \"gelu_tanh\", which OpenCLIP's CLIP towers do \
                    not have; export it with `cliptrain export hf` instead"
                .into(),
        );
    }
    if t.activation.is_some_and(|a| a != m.activation) {
        return Err(
            "its text tower has another activation than its image tower \
                    (model.text.activation), which OpenCLIP's CLIP cannot express; export it \
                    with `cliptrain export hf` instead"
                .into(),
        );
    }
    let mut vision = json!({
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "width": v.width,
        "layers": v.layers,
        "head_width": v.width / v.heads.max(1),
        "mlp_ratio": export_mlp_ratio(v.width, v.mlp_ratio),
    });
    let mut text = text_tower_cfg(t);
    text["pool_type"] = json!(match t.pooling {
        TextPooling::Eot => "eos",
        TextPooling::Last => "last",
        TextPooling::Argmax => "argmax",
    });
    text["eos_id"] = json!(m.eot_id);
    if m.layer_norm_eps != 1e-5 {
        vision["norm_kwargs"] = json!({"eps": m.layer_norm_eps});
        text["norm_kwargs"] = json!({"eps": m.layer_norm_eps});
    }
    let mut model_cfg = json!({
        "embed_dim": m.embed_dim,
        "quick_gelu": m.activation == Activation::QuickGelu,
        "vision_cfg": vision,
        "text_cfg": text,
    });
    if let Some(b) = loaded.model.logit_bias() {
        model_cfg["init_logit_bias"] = json!(b.double_value(&[]));
    }
    Ok(model_cfg)
}

/// `cliptrain export openclip`: `open_clip_config.json` + `open_clip_model.safetensors`
/// (+ the tokenizer files), written as one set (see `write_export`; abandoned when `stopped()`
/// says so before it is published). Returns the files written.
pub fn export(
    loaded: &LoadedModel,
    out: &Path,
    replace: bool,
    stopped: &dyn Fn() -> bool,
) -> Result<Vec<String>, SourceError> {
    let tokenizer = loaded.source.tokenizer.as_ref();
    // Refusals first, before anything is written.
    let config = config_json(loaded, tokenizer.is_some())?;
    let mut files = vec![CONFIG, WEIGHTS];
    if tokenizer.is_some() {
        files.extend(super::hf::TOKENIZER_FILES);
    }
    super::write_export(out, &files, replace, stopped, |dir| {
        write_json(&dir.join(CONFIG), &config)?;
        let tensors = loaded.named_tensors();
        let tensors = match loaded.source.spec.kind {
            ModelKind::Siglip => timm_siglip::from_hf(&tensors),
            ModelKind::Clip => from_hf(&tensors),
        };
        crate::checkpoint::write_tensors(&dir.join(WEIGHTS), &tensors)?;
        if let Some(tok) = tokenizer {
            let ctx = loaded.source.spec.text.context_length;
            super::hf::write_tokenizer_files(dir, tok, ctx)?;
        }
        Ok(())
    })
}

#[cfg(test)]
#[path = "openclip_tests.rs"]
mod tests;

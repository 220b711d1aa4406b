//! Hugging Face `CLIPModel` and `SiglipModel` folders: `config.json` (CLIPConfig or
//! SiglipConfig, told apart by `model_type`) to and from our model config, the tokenizer and
//! image-processor files the processors read, and `cliptrain export hf`. The weights need no
//! map: our names are HF's.
use super::{LoadedModel, SourceError, write_json};
use crate::model::{
    Activation, LogitHead, ModelKind, ModelSpec, TextConfig, TextPooling, VisionConfig, mlp_width,
};
use serde_json::{Value, json};
use std::path::Path;

/// HF's image-processor file.
pub const PREPROCESSOR: &str = "preprocessor_config.json";

fn bad(path: &Path, reason: String) -> SourceError {
    SourceError::BadConfig {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads `key` of `section` as a count, with HF's default when absent.
fn count(
    path: &Path,
    section: &Value,
    name: &str,
    key: &str,
    default: usize,
) -> Result<usize, SourceError> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            bad(
                path,
                format!("{name}.{key} = {v} is not a non-negative integer"),
            )
        }),
    }
}

fn activation(
    path: &Path,
    section: &Value,
    name: &str,
    default: &str,
) -> Result<Activation, SourceError> {
    match section
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or(default)
    {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        other => Err(bad(
            path,
            format!(
                "{name}.hidden_act = {other:?}: cliptrain supports \"quick_gelu\", \"gelu\" and \
                 \"gelu_pytorch_tanh\""
            ),
        )),
    }
}

/// HF's defaults for what a `config.json` leaves out, per architecture.
struct Defaults {
    act: &'static str,
    eps: f64,
    text: [usize; 6],
    vision: [usize; 6],
    embed: usize,
}

/// `text`: vocab, hidden, intermediate, layers, heads, positions; `vision`: hidden,
/// intermediate, layers, heads, image size, patch size.
const CLIP_DEFAULTS: Defaults = Defaults {
    act: "quick_gelu",
    eps: 1e-5,
    text: [49408, 512, 2048, 12, 8, 77],
    vision: [768, 3072, 12, 12, 224, 32],
    embed: 512,
};

const SIGLIP_DEFAULTS: Defaults = Defaults {
    act: "gelu_pytorch_tanh",
    eps: 1e-6,
    text: [32000, 768, 3072, 12, 12, 64],
    vision: [768, 3072, 12, 12, 224, 16],
    embed: 768,
};

/// The architecture `config.json`'s `model_type` names: `"clip"` (or absent, as old exports)
/// and `"siglip"`; anything else is refused by name.
fn model_kind(path: &Path, json: &Value) -> Result<ModelKind, SourceError> {
    match json.get("model_type").and_then(Value::as_str) {
        None | Some("clip") => Ok(ModelKind::Clip),
        Some("siglip") => Ok(ModelKind::Siglip),
        Some(other) => Err(bad(
            path,
            format!(
                "model_type = {other:?}: cliptrain reads Hugging Face \"clip\" (CLIPModel) and \
                 \"siglip\" (SiglipModel) folders only{}",
                if other.starts_with("siglip") {
                    " (SigLIP 2's NaFlex vision tower is another architecture)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// The model a CLIPConfig or SiglipConfig `config.json` describes (HF's defaults for absent
/// keys). CLIP text pools at `text_config.eos_token_id`, or — absent, or HF's legacy 2, which
/// means argmax pooling — at the last id of the vocabulary, where CLIP's BPE puts its
/// end-of-text token. SigLIP pools at the last position; its `eos_token_id` only names the
/// tokenizer's end-of-text id.
pub fn read_config(path: &Path) -> Result<ModelSpec, SourceError> {
    let json = super::read_json(path)?;
    let kind = model_kind(path, &json)?;
    let d = match kind {
        ModelKind::Clip => CLIP_DEFAULTS,
        ModelKind::Siglip => SIGLIP_DEFAULTS,
    };
    let empty = json!({});
    let t = super::section(path, &json, "text_config", &empty)?;
    let v = super::section(path, &json, "vision_config", &empty)?;
    let (t_act, v_act) = (
        activation(path, t, "text_config", d.act)?,
        activation(path, v, "vision_config", d.act)?,
    );
    let eps = |s: &Value| {
        s.get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(d.eps)
    };
    if eps(t) != eps(v) {
        return Err(bad(
            path,
            "text and vision layer_norm_eps differ; cliptrain uses one".into(),
        ));
    }
    if kind == ModelKind::Siglip && v.get("vision_use_head").and_then(Value::as_bool) == Some(false)
    {
        return Err(bad(
            path,
            "vision_config.vision_use_head = false: cliptrain's SigLIP pools images with the \
             attention-pooling head"
                .into(),
        ));
    }
    let [t_vocab, t_w, t_inter, t_layers, t_heads, t_pos] = d.text;
    let [v_w, v_inter, v_layers, v_heads, v_image, v_patch] = d.vision;
    let tw = count(path, t, "text_config", "hidden_size", t_w)?;
    let vw = count(path, v, "vision_config", "hidden_size", v_w)?;
    let ratio = |inter: usize, w: usize| inter as f64 / w.max(1) as f64;
    let vocab_size = count(path, t, "text_config", "vocab_size", t_vocab)?;
    let eos = t.get("eos_token_id").and_then(Value::as_i64);
    let (eot_id, pooling) = match (kind, eos) {
        (ModelKind::Clip, None | Some(HF_ARGMAX_EOS)) => {
            (vocab_size as i64 - 1, TextPooling::Argmax)
        }
        (ModelKind::Clip, Some(id)) => (id, TextPooling::Eot),
        (ModelKind::Siglip, Some(id)) if (0..vocab_size as i64).contains(&id) => {
            (id, TextPooling::Last)
        }
        (ModelKind::Siglip, _) => (vocab_size as i64 - 1, TextPooling::Last),
    };
    let embed_dim = match kind {
        ModelKind::Clip => count(path, &json, "config", "projection_dim", d.embed)?,
        // SiglipTextConfig's projection_size defaults to the text width.
        ModelKind::Siglip => count(path, t, "text_config", "projection_size", tw)?,
    };
    let head = match kind {
        ModelKind::Clip => LogitHead::Clip,
        ModelKind::Siglip => LogitHead::Siglip,
    };
    Ok(ModelSpec {
        kind,
        embed_dim,
        activation: v_act,
        layer_norm_eps: eps(t),
        vision: VisionConfig {
            image_size: count(path, v, "vision_config", "image_size", v_image)?,
            patch_size: count(path, v, "vision_config", "patch_size", v_patch)?,
            width: vw,
            layers: count(path, v, "vision_config", "num_hidden_layers", v_layers)?,
            heads: count(path, v, "vision_config", "num_attention_heads", v_heads)?,
            mlp_ratio: ratio(
                count(path, v, "vision_config", "intermediate_size", v_inter)?,
                vw,
            ),
            // A training choice, not part of a saved model.
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size,
            context_length: count(path, t, "text_config", "max_position_embeddings", t_pos)?,
            width: tw,
            layers: count(path, t, "text_config", "num_hidden_layers", t_layers)?,
            heads: count(path, t, "text_config", "num_attention_heads", t_heads)?,
            mlp_ratio: ratio(
                count(path, t, "text_config", "intermediate_size", t_inter)?,
                tw,
            ),
            activation: (t_act != v_act).then_some(t_act),
            pooling,
        },
        eot_id,
        head,
    })
}

/// The `text_config.eos_token_id` HF's `CLIPTextTransformer` reads as "pool by argmax" (the
/// value of configs saved before it pooled at the first EOT).
const HF_ARGMAX_EOS: i64 = 2;

/// Newer transformers (5.x) save the image processor inside this file, under `image_processor`.
pub const PROCESSOR: &str = "processor_config.json";

/// The image `mean`/`std` an HF folder states: `preprocessor_config.json`, or the
/// `image_processor` of `processor_config.json`; `None` when neither has both.
pub fn read_preprocessor(dir: &Path) -> Result<Option<super::MeanStd>, SourceError> {
    let Some((_, json)) = super::preprocess::hf_processor(dir)? else {
        return Ok(None);
    };
    let triple = |key: &str| -> Option<[f64; 3]> {
        let a = json.get(key)?.as_array()?;
        match a.as_slice() {
            [r, g, b] => Some([r.as_f64()?, g.as_f64()?, b.as_f64()?]),
            _ => None,
        }
    };
    Ok(triple("image_mean").zip(triple("image_std")))
}

fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    }
}

/// The CLIPConfig `config.json` of a model. `sot` (none: no start token) and `pad` are the
/// tokenizer's ids. `eos_token_id = m.eot_id` makes HF pool at the first EOT, and HF's legacy
/// `eos_token_id = 2` by argmax; CLIPModel has no last-position pooling, and an end-of-text id
/// of 2 would read as argmax, so those are refused.
pub fn config_json(m: &ModelSpec, sot: Option<i64>, pad: i64) -> Result<Value, SourceError> {
    let (t, v) = (&m.text, &m.vision);
    let eot = match t.pooling {
        TextPooling::Eot if m.eot_id == HF_ARGMAX_EOS => {
            return Err(SourceError::Unsupported(format!(
                "the model pools text at its end-of-text id {HF_ARGMAX_EOS}, which Hugging Face \
                 CLIPModel reads as argmax pooling; export it with `cliptrain export openclip`"
            )));
        }
        TextPooling::Eot => m.eot_id,
        TextPooling::Argmax => HF_ARGMAX_EOS,
        TextPooling::Last => {
            return Err(SourceError::Unsupported(
                "model.text.pooling = \"last\": Hugging Face CLIPModel pools only at the first \
                 end-of-text token or by argmax; export it with `cliptrain export openclip`"
                    .into(),
            ));
        }
    };
    Ok(json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": m.embed_dim,
        "logit_scale_init_value": LogitHead::Clip.logit_scale_init(),
        "initializer_factor": 1.0,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": mlp_width(t.width, t.mlp_ratio),
            "projection_dim": m.embed_dim,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": act_name(m.text.activation.unwrap_or(m.activation)),
            "layer_norm_eps": m.layer_norm_eps,
            "attention_dropout": 0.0,
            "eos_token_id": eot,
            "bos_token_id": sot,
            "pad_token_id": pad,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_size": v.width,
            "intermediate_size": mlp_width(v.width, v.mlp_ratio),
            "projection_dim": m.embed_dim,
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "hidden_act": act_name(m.activation),
            "layer_norm_eps": m.layer_norm_eps,
            "attention_dropout": 0.0,
        },
    }))
}

/// The SiglipConfig `config.json` of a SigLIP model. `sot` and `pad` are the tokenizer's ids
/// (HF's SigLIP model does not use them; they describe the tokenizer).
pub fn siglip_config_json(m: &ModelSpec, sot: Option<i64>, pad: i64) -> Value {
    let (t, v) = (&m.text, &m.vision);
    json!({
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "initializer_factor": 1.0,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "siglip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": mlp_width(t.width, t.mlp_ratio),
            "projection_size": m.embed_dim,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": act_name(m.text.activation.unwrap_or(m.activation)),
            "layer_norm_eps": m.layer_norm_eps,
            "attention_dropout": 0.0,
            "eos_token_id": m.eot_id,
            "bos_token_id": sot,
            "pad_token_id": pad,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_size": v.width,
            "intermediate_size": mlp_width(v.width, v.mlp_ratio),
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "hidden_act": act_name(m.activation),
            "layer_norm_eps": m.layer_norm_eps,
            "attention_dropout": 0.0,
            "vision_use_head": true,
        },
    })
}

/// Writes the tokenizer files a `CLIPTokenizer`/`AutoTokenizer` reads offline:
/// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` ([`TOKENIZER_FILES`]),
/// stating the specials the rows are made with (no `bos_token` without a start token), so that
/// reading the folder back gives the same rows. The class follows the tokenizer's model (see
/// [`crate::text::TextTokenizer::for_export`]), not its specials' names.
pub(crate) fn write_tokenizer_files(
    out: &Path,
    tok: &crate::text::TextTokenizer,
    context_length: usize,
) -> Result<(), SourceError> {
    let path = out.join("tokenizer.json");
    let export = tok.for_export().map_err(|e| bad(&path, e.to_string()))?;
    export
        .save(&path, true)
        .map_err(|e| bad(&path, e.to_string()))?;
    let name = |id: u32| tok.inner().id_to_token(id).unwrap_or_default();
    let specials = tok.specials();
    let eot = name(specials.eot);
    let unk = match unk_token(tok) {
        Some(unk) => unk,
        None => eot.clone(),
    };
    let mut map = json!({"eos_token": eot, "unk_token": unk, "pad_token": name(hf_pad(tok))});
    if let Some(sot) = specials.sot {
        map["bos_token"] = json!(name(sot));
    }
    let mut config = map.clone();
    config["tokenizer_class"] = json!(tok.hf_class());
    config["model_max_length"] = json!(context_length);
    config["clean_up_tokenization_spaces"] = json!(false);
    config["do_lower_case"] = json!(tok.lowercases());
    write_json(&out.join("tokenizer_config.json"), &config)?;
    write_json(&out.join("special_tokens_map.json"), &map)?;
    Ok(())
}

/// The pad id an export states. CLIP's rows pad with id 0, which is `!` to CLIP's BPE; its
/// Hugging Face tokenizer pads with EOT (the same features under EOT pooling). Any other
/// tokenizer states the id its rows pad with, so that readers give the very same rows.
fn hf_pad(tok: &crate::text::TextTokenizer) -> u32 {
    let pad = tok.pad_id();
    match (tok.is_clip_bpe() && pad == 0) || tok.inner().id_to_token(pad).is_none() {
        true => tok.eot_id(),
        false => pad,
    }
}

/// The unknown token of the tokenizer's model (BPE, WordPiece, WordLevel, Unigram), if any.
fn unk_token(tok: &crate::text::TextTokenizer) -> Option<String> {
    let model = serde_json::to_value(tok.inner().get_model()).ok()?;
    match (model.get("unk_token"), model.get("unk_id")) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (_, Some(id)) => tok.inner().id_to_token(u32::try_from(id.as_u64()?).ok()?),
        _ => None,
    }
}

/// The tokenizer files an export writes (when the model has a tokenizer).
pub(crate) const TOKENIZER_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// `cliptrain export hf`: a folder `CLIPModel.from_pretrained` and `CLIPProcessor.from_pretrained`
/// load offline — or, for a SigLIP model, one `SiglipModel.from_pretrained` and
/// `SiglipImageProcessor.from_pretrained` load. Returns the files written. Refused when one of
/// them is already in `out`, unless `replace`; written as one set (see `write_export`), and
/// abandoned when `stopped()` says so before it is published.
pub fn export(
    loaded: &LoadedModel,
    out: &Path,
    replace: bool,
    stopped: &dyn Fn() -> bool,
) -> Result<Vec<String>, SourceError> {
    let (source, m) = (&loaded.source, &loaded.source.spec);
    let siglip = m.kind == ModelKind::Siglip;
    if !siglip && m.head == LogitHead::Siglip {
        return Err(SourceError::Unsupported(format!(
            "{} is a CLIP model trained with the sigmoid loss (it has logit_bias); Hugging Face \
             CLIPModel has no logit bias. Export it with `cliptrain export openclip` instead",
            source.dir.display()
        )));
    }
    let mut files = vec!["config.json", "model.safetensors", PREPROCESSOR];
    if source.tokenizer.is_some() {
        files.extend(TOKENIZER_FILES);
    }
    // The pad the tokenizer files state (see `hf_pad`); without a tokenizer, CLIP's layout:
    // SOT just below EOT, padding with EOT.
    let (sot, pad) = match &source.tokenizer {
        Some(t) => (t.sot_id().map(i64::from), i64::from(hf_pad(t))),
        None => (Some(m.eot_id - 1), m.eot_id),
    };
    // Before anything is written: a pooling HF cannot state is refused.
    let config = match siglip {
        true => siglip_config_json(m, sot, pad),
        false => config_json(m, sot, pad)?,
    };
    let d = source.config().data;
    let (size, mean, std) = (m.vision.image_size, d.image_mean, d.image_std);
    let processor = super::preprocess::hf_json(d.resize_rule(), size, mean, std)?;
    super::write_export(out, &files, replace, stopped, |dir| {
        write_json(&dir.join("config.json"), &config)?;
        let weights = dir.join("model.safetensors");
        crate::checkpoint::write_tensors(&weights, &loaded.named_tensors())?;
        write_json(&dir.join(PREPROCESSOR), &processor)?;
        if let Some(tok) = &source.tokenizer {
            write_tokenizer_files(dir, tok, m.text.context_length)?;
        }
        Ok(())
    })
}

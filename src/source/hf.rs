//! Hugging Face `CLIPModel` folders: `config.json` (CLIPConfig) to and from our model config,
//! the tokenizer and image-processor files `CLIPProcessor` reads, and `cliptrain export hf`.
//! The weights need no map: our names are HF's.
use super::{LoadedModel, SourceError, write_json};
use crate::model::{
    Activation, LogitHead, ModelSpec, TextConfig, TextPooling, VisionConfig, mlp_width,
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

fn activation(path: &Path, section: &Value, name: &str) -> Result<Activation, SourceError> {
    match section
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("quick_gelu")
    {
        "quick_gelu" => Ok(Activation::QuickGelu),
        "gelu" => Ok(Activation::Gelu),
        other => Err(bad(
            path,
            format!(
                "{name}.hidden_act = {other:?}: cliptrain supports \"quick_gelu\" and \"gelu\""
            ),
        )),
    }
}

/// The model a CLIPConfig `config.json` describes (HF's defaults for absent keys). Text pools at
/// the first `text_config.eos_token_id`, or — absent, or HF's legacy 2 — by argmax (the
/// largest id: CLIP's BPE puts its end-of-text token last, which is the `eot_id` stated then).
pub fn read_config(path: &Path) -> Result<ModelSpec, SourceError> {
    let json = super::read_json(path)?;
    let empty = json!({});
    let t = super::section(path, &json, "text_config", &empty)?;
    let v = super::section(path, &json, "vision_config", &empty)?;
    let (t_act, v_act) = (
        activation(path, t, "text_config")?,
        activation(path, v, "vision_config")?,
    );
    if t_act != v_act {
        return Err(bad(
            path,
            "text_config.hidden_act and vision_config.hidden_act differ; cliptrain uses one activation for both towers".into(),
        ));
    }
    let eps = |s: &Value| {
        s.get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5)
    };
    if eps(t) != eps(v) {
        return Err(bad(
            path,
            "text and vision layer_norm_eps differ; cliptrain uses one".into(),
        ));
    }
    let tw = count(path, t, "text_config", "hidden_size", 512)?;
    let vw = count(path, v, "vision_config", "hidden_size", 768)?;
    let ratio = |inter: usize, w: usize| inter as f64 / w.max(1) as f64;
    let vocab_size = count(path, t, "text_config", "vocab_size", 49408)?;
    let (eot_id, pooling) = match t.get("eos_token_id").and_then(Value::as_i64) {
        None | Some(HF_ARGMAX_EOS) => (vocab_size as i64 - 1, TextPooling::Argmax),
        Some(id) => (id, TextPooling::Eot),
    };
    Ok(ModelSpec {
        embed_dim: count(path, &json, "config", "projection_dim", 512)?,
        activation: t_act,
        layer_norm_eps: eps(t),
        vision: VisionConfig {
            image_size: count(path, v, "vision_config", "image_size", 224)?,
            patch_size: count(path, v, "vision_config", "patch_size", 32)?,
            width: vw,
            layers: count(path, v, "vision_config", "num_hidden_layers", 12)?,
            heads: count(path, v, "vision_config", "num_attention_heads", 12)?,
            mlp_ratio: ratio(
                count(path, v, "vision_config", "intermediate_size", 3072)?,
                vw,
            ),
            // A training choice, not part of a saved model.
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size,
            context_length: count(path, t, "text_config", "max_position_embeddings", 77)?,
            width: tw,
            layers: count(path, t, "text_config", "num_hidden_layers", 12)?,
            heads: count(path, t, "text_config", "num_attention_heads", 8)?,
            mlp_ratio: ratio(
                count(path, t, "text_config", "intermediate_size", 2048)?,
                tw,
            ),
            pooling,
        },
        eot_id,
        head: LogitHead::Clip,
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
    let json = if dir.join(PREPROCESSOR).is_file() {
        super::read_json(&dir.join(PREPROCESSOR))?
    } else if dir.join(PROCESSOR).is_file() {
        match super::read_json(&dir.join(PROCESSOR))?.get("image_processor") {
            Some(v) => v.clone(),
            None => return Ok(None),
        }
    } else {
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
            "hidden_act": act_name(m.activation),
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

/// `preprocessor_config.json` for `CLIPImageProcessor`: CLIP's eval transform (bicubic resize
/// of the shorter side, center crop) at our size and normalisation.
pub fn preprocessor_json(size: usize, mean: [f64; 3], std: [f64; 3]) -> Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": size},
        "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": size, "width": size},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": mean,
        "image_std": std,
        "do_convert_rgb": true,
    })
}

/// Writes the tokenizer files a `CLIPTokenizer`/`AutoTokenizer` reads offline:
/// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` ([`TOKENIZER_FILES`]),
/// stating the specials the rows are made with (no `bos_token` without a start token), so that
/// reading the folder back gives the same rows.
pub(crate) fn write_tokenizer_files(
    out: &Path,
    tok: &crate::text::TextTokenizer,
    context_length: usize,
) -> Result<(), SourceError> {
    let path = out.join("tokenizer.json");
    tok.save(&path).map_err(|e| bad(&path, e.to_string()))?;
    let name = |id: u32| tok.inner().id_to_token(id).unwrap_or_default();
    let specials = tok.specials();
    let eot = name(specials.eot);
    let clip = specials.clean == crate::text::TextClean::Clip;
    // CLIP's rows pad with id 0, which is no token to HF; its tokenizer pads with EOT (the
    // same features under EOT pooling).
    let pad = match clip && specials.pad == 0 {
        true => eot.clone(),
        false => name(specials.pad),
    };
    let unk = match unk_token(tok) {
        Some(unk) => unk,
        None => eot.clone(),
    };
    let mut map = json!({"eos_token": eot, "unk_token": unk, "pad_token": pad});
    if let Some(sot) = specials.sot {
        map["bos_token"] = json!(name(sot));
    }
    let mut config = map.clone();
    config["tokenizer_class"] = json!(match clip {
        true => "CLIPTokenizer",
        false => "PreTrainedTokenizerFast",
    });
    config["model_max_length"] = json!(context_length);
    config["clean_up_tokenization_spaces"] = json!(false);
    if clip {
        config["do_lower_case"] = json!(true);
    }
    write_json(&out.join("tokenizer_config.json"), &config)?;
    write_json(&out.join("special_tokens_map.json"), &map)?;
    Ok(())
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
/// load offline. Returns the files written. Refused when one of them is already in `out`,
/// unless `replace`.
pub fn export(loaded: &LoadedModel, out: &Path, replace: bool) -> Result<Vec<String>, SourceError> {
    let (source, m) = (&loaded.source, &loaded.source.spec);
    if m.head == LogitHead::Siglip {
        return Err(SourceError::Unsupported(format!(
            "{} is a SigLIP model (it has logit_bias); Hugging Face CLIPModel has no logit bias. \
             Export it with `cliptrain export openclip` instead",
            source.dir.display()
        )));
    }
    let mut files = vec!["config.json", "model.safetensors", PREPROCESSOR];
    if source.tokenizer.is_some() {
        files.extend(TOKENIZER_FILES);
    }
    // CLIP's rows pad with 0, which HF states as EOT (see `write_tokenizer_files`); without a
    // tokenizer, CLIP's layout: SOT just below EOT.
    let (sot, pad) = match &source.tokenizer {
        Some(t) if t.specials().clean == crate::text::TextClean::Clip && t.pad_id() == 0 => {
            (t.sot_id().map(i64::from), m.eot_id)
        }
        Some(t) => (t.sot_id().map(i64::from), i64::from(t.pad_id())),
        None => (Some(m.eot_id - 1), m.eot_id),
    };
    // Before anything is written: a pooling HF cannot state is refused.
    let config = config_json(m, sot, pad)?;
    super::check_replace(out, &files, replace)?;
    std::fs::create_dir_all(out).map_err(super::io("creating", out))?;
    write_json(&out.join("config.json"), &config)?;
    let weights = out.join("model.safetensors");
    crate::checkpoint::write_tensors(&weights, &loaded.named_tensors())?;
    let d = source.config().data;
    write_json(
        &out.join(PREPROCESSOR),
        &preprocessor_json(m.vision.image_size, d.image_mean, d.image_std),
    )?;
    if let Some(tok) = &source.tokenizer {
        write_tokenizer_files(out, tok, m.text.context_length)?;
    }
    Ok(files.into_iter().map(String::from).collect())
}

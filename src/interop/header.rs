//! A model folder's stated dimensions, checked before any model is built: the same rules as a
//! TOML `[model]` section, then against the tensor shapes in the weights file's safetensors
//! header (or a PyTorch file's pickle, see [`super::torch_file`]). The header is read alone (8-byte length, then at most [`MAX_HEADER`] bytes of JSON)
//! and every shape it states must fit in the file's data, so a folder cannot make cliptrain
//! allocate more than its weights file holds.
use super::{SourceError, SourceKind, openclip};
use crate::model::{ModelKind, ModelSpec, mlp_width};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// safetensors' own limit on the JSON header.
const MAX_HEADER: u64 = 100_000_000;

fn bad(path: &Path, reason: String) -> SourceError {
    SourceError::BadConfig {
        path: path.to_path_buf(),
        reason,
    }
}

/// Tensor name → shape, from the header of the safetensors file at `path`, each shape checked
/// to fit in the bytes the file really has.
pub(crate) fn read_shapes(path: &Path) -> Result<BTreeMap<String, Vec<u64>>, SourceError> {
    if super::torch_file::is_pickle(path) {
        // The pickle is read for its shapes (each checked against its storage's entry).
        let file = super::torch_file::TorchFile::open(path)?;
        return Ok(file
            .shapes()
            .map(|(n, s)| (n.to_string(), s.iter().map(|d| *d as u64).collect()))
            .collect());
    }
    let mut file = std::fs::File::open(path).map_err(super::io("opening", path))?;
    let len = file.metadata().map_err(super::io("reading", path))?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(super::io("reading", path))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > len.saturating_sub(8) {
        return Err(bad(
            path,
            format!("safetensors header of {n} bytes does not fit a file of {len} bytes"),
        ));
    }
    let mut text = Vec::with_capacity(n as usize);
    file.take(n)
        .read_to_end(&mut text)
        .map_err(super::io("reading", path))?;
    let json: Value = serde_json::from_slice(&text)
        .map_err(|e| bad(path, format!("safetensors header is not valid JSON: {e}")))?;
    let Value::Object(entries) = json else {
        return Err(bad(path, "safetensors header is not a JSON object".into()));
    };
    let data = len - 8 - n;
    let mut shapes = BTreeMap::new();
    for (name, info) in entries.iter().filter(|(k, _)| *k != "__metadata__") {
        let shape = info.get("shape").and_then(Value::as_array);
        let shape: Option<Vec<u64>> = shape.and_then(|s| s.iter().map(Value::as_u64).collect());
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(Value::as_u64);
        let fits = |s: &[u64], end: u64| {
            let count = s.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            end <= data && count.is_some_and(|c| c <= end)
        };
        match (shape, end) {
            (Some(s), Some(end)) if fits(&s, end) => shapes.insert(name.clone(), s),
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "tensor {name}: its shape and offsets do not fit the file's {data} bytes of data"
                    ),
                ));
            }
        };
    }
    Ok(shapes)
}

/// Where `key` (ours, under `model.`) is stated in a folder of `kind` holding a model of
/// architecture `model`, for messages.
fn stated_as(kind: SourceKind, model: ModelKind, key: &str) -> String {
    if kind == SourceKind::HuggingFace && model == ModelKind::Siglip && key == "embed_dim" {
        return "text_config.projection_size".into();
    }
    let hf = [
        ("embed_dim", "projection_dim"),
        ("vision.width", "vision_config.hidden_size"),
        ("vision.layers", "vision_config.num_hidden_layers"),
        ("vision.heads", "vision_config.num_attention_heads"),
        ("vision.mlp_ratio", "vision_config.intermediate_size"),
        ("vision.image_size", "vision_config.image_size"),
        ("vision.patch_size", "vision_config.patch_size"),
        ("text.width", "text_config.hidden_size"),
        ("text.layers", "text_config.num_hidden_layers"),
        ("text.heads", "text_config.num_attention_heads"),
        ("text.mlp_ratio", "text_config.intermediate_size"),
        ("text.vocab_size", "text_config.vocab_size"),
        ("text.context_length", "text_config.max_position_embeddings"),
    ];
    match kind {
        SourceKind::Checkpoint => format!("model.{key}"),
        SourceKind::HuggingFace => hf
            .iter()
            .find(|(ours, _)| *ours == key)
            .map_or(key.to_string(), |(_, theirs)| theirs.to_string()),
        SourceKind::OpenClip => key
            .replace("vision.", "vision_cfg.")
            .replace("text.", "text_cfg.")
            .replace("vision_cfg.heads", "vision_cfg.head_width"),
    }
}

/// The spec's dimensions against the rules and the weights' shapes; an error naming the config
/// file, the key and the tensor that disagrees.
pub(crate) fn check(
    kind: SourceKind,
    spec: &ModelSpec,
    config: &Path,
    weights: &Path,
) -> Result<(), SourceError> {
    let problems = spec.dim_problems();
    if !problems.is_empty() {
        return Err(bad(
            config,
            format!("the model it describes is invalid: {}", problems.join("; ")),
        ));
    }
    let mut shapes = read_shapes(weights)?;
    if kind == SourceKind::OpenClip {
        shapes = match spec.kind {
            ModelKind::Siglip => super::timm_siglip::hf_shapes(shapes),
            ModelKind::Clip => openclip::hf_shapes(shapes),
        };
    }
    let mut wrong = Vec::new();
    for (key, name, want) in expected(spec) {
        match shapes.get(&name) {
            Some(have) if *have == want => {}
            have => wrong.push(format!(
                "{} = {} gives {name} the shape {want:?}, the weights have {}",
                stated_as(kind, spec.kind, key),
                value_of(spec, key, kind),
                have.map_or("no such tensor".into(), |h| format!("{h:?}"))
            )),
        }
    }
    for (tower, layers) in [("vision", spec.vision.layers), ("text", spec.text.layers)] {
        let prefix = format!("{tower}_model.encoder.layers.");
        let have = shapes
            .keys()
            .filter_map(|n| {
                n.strip_prefix(&prefix)?
                    .split('.')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map_or(0, |i| i + 1);
        if have != layers as u64 {
            let key = stated_as(kind, spec.kind, &format!("{tower}.layers"));
            wrong.push(format!(
                "{key} = {layers}, the weights have {have} {tower} layers"
            ));
        }
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(bad(
            config,
            format!("does not match {}: {}", weights.display(), wrong.join("; ")),
        )),
    }
}

/// The value of `key` as the folder states it (HF states MLP widths, not ratios).
fn value_of(spec: &ModelSpec, key: &str, kind: SourceKind) -> String {
    let (v, t) = (&spec.vision, &spec.text);
    let hf = kind == SourceKind::HuggingFace;
    match key {
        "vision.mlp_ratio" if hf => mlp_width(v.width, v.mlp_ratio).to_string(),
        "text.mlp_ratio" if hf => mlp_width(t.width, t.mlp_ratio).to_string(),
        "vision.width" => v.width.to_string(),
        "vision.image_size" => v.image_size.to_string(),
        "vision.patch_size" => v.patch_size.to_string(),
        "vision.mlp_ratio" => v.mlp_ratio.to_string(),
        "text.vocab_size" => t.vocab_size.to_string(),
        "text.context_length" => t.context_length.to_string(),
        "text.mlp_ratio" => t.mlp_ratio.to_string(),
        _ => spec.embed_dim.to_string(),
    }
}

/// (key, tensor, shape) the spec implies for the tensors that pin each dimension.
fn expected(spec: &ModelSpec) -> Vec<(&'static str, String, Vec<u64>)> {
    let (v, t) = (&spec.vision, &spec.text);
    let (vw, tw, e) = (v.width as u64, t.width as u64, spec.embed_dim as u64);
    let (p, grid) = (
        v.patch_size as u64,
        (v.image_size / v.patch_size.max(1)) as u64,
    );
    let vm = mlp_width(v.width, v.mlp_ratio) as u64;
    let tm = mlp_width(t.width, t.mlp_ratio) as u64;
    let s = |x: &str| x.to_string();
    let siglip = spec.kind == ModelKind::Siglip;
    // SigLIP has no class token; its towers end in heads instead of projections.
    let positions = grid * grid + u64::from(!siglip);
    let (image_out, text_out) = match siglip {
        true => (
            ("vision.width", s("vision_model.head.probe"), vec![1, 1, vw]),
            ("embed_dim", s("text_model.head.weight"), vec![e, tw]),
        ),
        false => (
            ("embed_dim", s("visual_projection.weight"), vec![e, vw]),
            ("embed_dim", s("text_projection.weight"), vec![e, tw]),
        ),
    };
    vec![
        (
            "vision.width",
            s("vision_model.embeddings.patch_embedding.weight"),
            vec![vw, 3, p, p],
        ),
        (
            "vision.image_size",
            s("vision_model.embeddings.position_embedding.weight"),
            vec![positions, vw],
        ),
        (
            "vision.mlp_ratio",
            s("vision_model.encoder.layers.0.mlp.fc1.weight"),
            vec![vm, vw],
        ),
        image_out,
        (
            "text.vocab_size",
            s("text_model.embeddings.token_embedding.weight"),
            vec![t.vocab_size as u64, tw],
        ),
        (
            "text.context_length",
            s("text_model.embeddings.position_embedding.weight"),
            vec![t.context_length as u64, tw],
        ),
        (
            "text.mlp_ratio",
            s("text_model.encoder.layers.0.mlp.fc1.weight"),
            vec![tm, tw],
        ),
        text_out,
    ]
}

//! Each model's image resize as its folder states it, read and written: Hugging Face image
//! processors (`CLIPImageProcessor`, `SiglipImageProcessor`: `size`, `resample`,
//! `do_center_crop`, `crop_size`, `do_rescale`) and OpenCLIP's `preprocess_cfg` (`size`,
//! `resize_mode`, `interpolation`, `fill_color`). What cliptrain cannot do the same way is
//! refused naming the file and key, never approximated.
use super::{SourceError, hf};
use crate::data::resize::{ImageResize, Interpolation, ResizeRule};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The image processor settings of an HF folder (`preprocessor_config.json`, else the
/// `image_processor` of `processor_config.json`) and the file they came from.
pub(super) fn hf_processor(dir: &Path) -> Result<Option<(PathBuf, Value)>, SourceError> {
    let pre = dir.join(hf::PREPROCESSOR);
    if pre.is_file() {
        return Ok(Some((pre.clone(), super::read_json(&pre)?)));
    }
    let proc = dir.join(hf::PROCESSOR);
    if proc.is_file() {
        let json = super::read_json(&proc)?;
        return Ok(json.get("image_processor").map(|v| (proc, v.clone())));
    }
    Ok(None)
}

/// The resize an HF image processor states for a model of input size `input`; `None` when the
/// folder has no processor file.
pub fn read_hf(dir: &Path, input: usize) -> Result<Option<ResizeRule>, SourceError> {
    let Some((path, p)) = hf_processor(dir)? else {
        return Ok(None);
    };
    let bad = |key: &str, why: String| SourceError::BadConfig {
        path: path.clone(),
        reason: format!("{key}: {why}"),
    };
    let class = p["image_processor_type"]
        .as_str()
        .unwrap_or("CLIPImageProcessor");
    // SigLIP's processor resizes to a square and does not crop; CLIP's crops after the resize.
    let siglip = class.starts_with("Siglip");
    let flag = |key: &str, default: bool| p.get(key).and_then(Value::as_bool).unwrap_or(default);
    if !flag("do_resize", true) {
        return Err(bad(
            "do_resize",
            "false: cliptrain resizes every image to the model's input; remove the key or set it true".into(),
        ));
    }
    if flag("do_rescale", true) {
        let factor = p
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0);
        if (factor * 255.0 - 1.0).abs() > 1e-6 {
            return Err(bad(
                "rescale_factor",
                format!("{factor}: cliptrain scales pixels by 1/255"),
            ));
        }
    }
    let int = |v: &Value, key: &str| -> Result<u32, SourceError> {
        v.as_u64()
            .filter(|&n| (1..=4096).contains(&n))
            .map(|n| n as u32)
            .ok_or_else(|| bad(key, format!("{v} is not a size of 1 to 4096 pixels")))
    };
    let size = p.get("size").cloned().unwrap_or(Value::Null);
    let (mode, target) = if let Some(edge) = size.get("shortest_edge") {
        (ImageResize::Shortest, int(edge, "size.shortest_edge")?)
    } else if let (Some(h), Some(w)) = (size.get("height"), size.get("width")) {
        let (h, w) = (int(h, "size.height")?, int(w, "size.width")?);
        if h != w {
            return Err(bad(
                "size",
                format!("{h}×{w}: cliptrain's models take square images"),
            ));
        }
        (ImageResize::Squash, h)
    } else if size.is_u64() {
        // A bare number: CLIP's processor reads it as the shortest edge, SigLIP's as a square.
        let n = int(&size, "size")?;
        match siglip {
            true => (ImageResize::Squash, n),
            false => (ImageResize::Shortest, n),
        }
    } else if size.is_null() {
        (
            if siglip {
                ImageResize::Squash
            } else {
                ImageResize::Shortest
            },
            input as u32,
        )
    } else {
        return Err(bad(
            "size",
            format!(
                "{size}: cliptrain reads {{\"shortest_edge\": N}}, {{\"height\": N, \"width\": N}} or N"
            ),
        ));
    };
    let crop = if flag("do_center_crop", !siglip) {
        let c = p.get("crop_size").cloned().unwrap_or(json!(input));
        let side = match (c.get("height"), c.get("width")) {
            (Some(h), Some(w)) if h == w => int(h, "crop_size.height")?,
            (Some(_), Some(_)) => {
                return Err(bad(
                    "crop_size",
                    format!("{c}: cliptrain's models take square images"),
                ));
            }
            _ => int(&c, "crop_size")?,
        };
        Some(side)
    } else {
        None
    };
    // What reaches the model must be its input size: the crop, or the resize itself.
    let out = crop.unwrap_or(match mode {
        ImageResize::Squash => target,
        _ => 0,
    });
    if out as usize != input {
        let key = if crop.is_some() { "crop_size" } else { "size" };
        return Err(bad(
            key,
            format!(
                "gives {}-pixel images, but the model's image_size is {input}",
                if out == 0 {
                    "non-square".to_string()
                } else {
                    out.to_string()
                }
            ),
        ));
    }
    let filter = match p.get("resample").map(|r| r.as_u64()) {
        None => Interpolation::Bicubic,
        Some(Some(3)) => Interpolation::Bicubic,
        Some(Some(2)) => Interpolation::Bilinear,
        Some(Some(1)) => Interpolation::Lanczos,
        Some(_) => {
            return Err(bad(
                "resample",
                format!(
                    "{}: cliptrain resamples with PIL's 3 (bicubic), 2 (bilinear) or 1 (lanczos)",
                    p["resample"]
                ),
            ));
        }
    };
    Ok(Some(ResizeRule {
        mode,
        size: if target as usize == input { 0 } else { target },
        filter,
        fill: 0,
    }))
}

/// The resize of an OpenCLIP `preprocess_cfg`, for a model of input size `input`; `None` when
/// the file has no `preprocess_cfg`.
pub fn read_openclip(
    path: &Path,
    json: &Value,
    input: usize,
) -> Result<Option<ResizeRule>, SourceError> {
    let Some(p) = json.get("preprocess_cfg") else {
        return Ok(None);
    };
    let bad = |key: &str, why: String| SourceError::BadConfig {
        path: path.to_path_buf(),
        reason: format!("preprocess_cfg.{key}: {why}"),
    };
    if let Some(size) = p.get("size") {
        let side = match size {
            Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
            v => v.as_u64(),
        };
        if side != Some(input as u64) {
            return Err(bad(
                "size",
                format!("{size}, but the model's image_size is {input}"),
            ));
        }
    }
    let text = |key: &str, default: &'static str| -> Result<String, SourceError> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(default.into()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad(key, format!("{v} is not a string"))),
        }
    };
    let mode = match text("resize_mode", "shortest")?.as_str() {
        "shortest" => ImageResize::Shortest,
        "longest" => ImageResize::Longest,
        "squash" => ImageResize::Squash,
        other => {
            return Err(bad(
                "resize_mode",
                format!("{other:?}: OpenCLIP's are \"shortest\", \"longest\" and \"squash\""),
            ));
        }
    };
    // OpenCLIP's own reading: bilinear when it says so, bicubic for anything else.
    let filter = match text("interpolation", "bicubic")?.as_str() {
        "bilinear" => Interpolation::Bilinear,
        _ => Interpolation::Bicubic,
    };
    let fill = match p.get("fill_color") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|&f| f <= 255)
            .ok_or_else(|| bad("fill_color", format!("{v} is not a gray level of 0 to 255")))?
            as u8,
    };
    Ok(Some(ResizeRule {
        mode,
        size: 0,
        filter,
        fill,
    }))
}

/// PIL's number for a filter, as `resample` states it.
fn pil_code(f: Interpolation) -> u64 {
    match f {
        Interpolation::Bicubic => 3,
        Interpolation::Bilinear => 2,
        Interpolation::Lanczos => 1,
    }
}

/// The `preprocessor_config.json` of an export: `CLIPImageProcessor` for a centre-cropping
/// rule, `SiglipImageProcessor` (a square resize, no crop) for `squash` to the input size.
/// `longest` has no Hugging Face processor (they cannot pad): refused.
pub fn hf_json(
    rule: ResizeRule,
    input: usize,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<Value, SourceError> {
    let target = if rule.size == 0 {
        input as u32
    } else {
        rule.size
    };
    let mut p = json!({
        "do_resize": true,
        "resample": pil_code(rule.filter),
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": mean,
        "image_std": std,
        "do_convert_rgb": true,
    });
    match rule.mode {
        ImageResize::Squash if target as usize == input => {
            p["image_processor_type"] = json!("SiglipImageProcessor");
            p["size"] = json!({"height": input, "width": input});
        }
        ImageResize::Squash | ImageResize::Shortest => {
            p["image_processor_type"] = json!("CLIPImageProcessor");
            p["size"] = match rule.mode {
                ImageResize::Shortest => json!({"shortest_edge": target}),
                _ => json!({"height": target, "width": target}),
            };
            p["do_center_crop"] = json!(true);
            p["crop_size"] = json!({"height": input, "width": input});
        }
        ImageResize::Longest => {
            return Err(SourceError::Unsupported(
                "the model resizes images by their longer side and pads them \
                 (data.image_resize = \"longest\"), which no Hugging Face image processor does; \
                 export it with `cliptrain export openclip`, or set data.image_resize"
                    .into(),
            ));
        }
    }
    Ok(p)
}

/// The `preprocess_cfg` of an OpenCLIP export. OpenCLIP resizes to its input size directly,
/// so a rule with another resize size is refused.
pub fn openclip_json(
    rule: ResizeRule,
    input: usize,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<Value, SourceError> {
    if rule.size != 0 && rule.size as usize != input {
        return Err(SourceError::Unsupported(format!(
            "the model resizes images to {} before cropping {input}, which OpenCLIP's \
             preprocess_cfg cannot state; export it with `cliptrain export hf`",
            rule.size
        )));
    }
    let mode = match rule.mode {
        ImageResize::Shortest => "shortest",
        ImageResize::Longest => "longest",
        ImageResize::Squash => "squash",
    };
    let interpolation = match rule.filter {
        Interpolation::Bicubic => "bicubic",
        Interpolation::Bilinear => "bilinear",
        Interpolation::Lanczos => {
            return Err(SourceError::Unsupported(
                "the model resamples with lanczos, which OpenCLIP's transforms do not \
                 (it reads anything but bilinear as bicubic); export it with `cliptrain export hf`"
                    .into(),
            ));
        }
    };
    Ok(
        json!({"size": input, "mode": "RGB", "mean": mean, "std": std,
              "interpolation": interpolation, "resize_mode": mode, "fill_color": rule.fill}),
    )
}

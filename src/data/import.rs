//! `cliptrain data build`: your own images into img2dataset-style shards.
//!
//! Two inputs: a folder of images plus a caption list (CSV `file,caption` or JSONL
//! `{"file": .., "caption": ..}`) for training, or an ImageFolder (`DIR/<class>/*.jpg`) for a
//! zero-shot evaluation set with `.cls` labels. Rows whose image is missing or unreadable are
//! reported in `stats.json` and on stderr, never fatal. Images are decoded once to be validated;
//! JPEGs within `max_side` are stored byte for byte, anything else is (resized and) re-encoded
//! as JPEG quality 90.
use super::staging::{Staging, StagingError};
use super::transform::decode_rgb8;
use super::writer::{ShardInfo, ShardWriter, WriterError};
use fast_image_resize::{
    self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::ImageEncoder;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Row {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Empty(String),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Staging(#[from] StagingError),
    #[error(
        "stopped after {done} of {rows} rows; the unfinished build was removed and nothing was \
         written to {}: run the command again to build it from the start",
        out.display()
    )]
    Stopped {
        done: usize,
        rows: usize,
        out: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub out: PathBuf,
    /// Shard name prefix: `PREFIX-000000.tar`.
    pub prefix: String,
    pub shard_size: usize,
    /// Longer image side limit; larger images are downscaled. 0 keeps sizes.
    pub max_side: u32,
    pub max_pixels: u64,
    pub threads: usize,
}

/// One row of input: an image file and what goes with it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Line in the caption file (or index in the folder listing), for messages.
    pub line: usize,
    pub file: PathBuf,
    pub caption: String,
    pub label: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub line: usize,
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportStats {
    pub rows: usize,
    pub written: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
    pub shards: Vec<ShardInfo>,
    /// Brace spec naming every shard written, e.g. `out/train-{000000..000003}.tar`.
    pub spec: String,
    pub classnames: Option<Vec<String>>,
}

/// Reads `captions` (CSV or JSONL, by extension or first character); image paths are relative
/// to `images`.
pub fn read_caption_rows(images: &Path, captions: &Path) -> Result<Vec<Row>, ImportError> {
    let text = std::fs::read_to_string(captions).map_err(|source| ImportError::Read {
        path: captions.into(),
        source,
    })?;
    let jsonl = captions
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "json")
        || text.trim_start().starts_with('{');
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ImportError::Row {
            path: captions.into(),
            line: line_no,
            reason,
        };
        let (file, caption) = if jsonl {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let file = field("file").ok_or_else(|| bad("missing string field \"file\"".into()))?;
            let caption =
                field("caption").ok_or_else(|| bad("missing string field \"caption\"".into()))?;
            (file, caption)
        } else {
            let fields = parse_csv_line(line).map_err(bad)?;
            if fields.len() < 2 {
                return Err(bad(format!(
                    "expected 2 columns file,caption, found {}",
                    fields.len()
                )));
            }
            if i == 0 && fields[0].trim().eq_ignore_ascii_case("file") {
                continue; // header
            }
            // An unquoted caption may still contain commas: everything after the first column.
            (
                fields[0].trim().to_string(),
                fields[1..].join(",").trim().to_string(),
            )
        };
        rows.push(Row {
            line: line_no,
            file: images.join(file),
            caption,
            label: None,
        });
    }
    if rows.is_empty() {
        return Err(ImportError::Empty(format!(
            "{} has no rows",
            captions.display()
        )));
    }
    Ok(rows)
}

/// One row per image of an ImageFolder; classes are the sorted subfolder names.
pub fn read_image_folder(root: &Path) -> Result<(Vec<Row>, Vec<String>), ImportError> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| ImportError::Read {
            path: p.into(),
            source,
        })
    };
    let mut classes: Vec<String> = read(root)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(ImportError::Empty(format!(
            "{} has no class subfolders (expected DIR/<class>/*.jpg)",
            root.display()
        )));
    }
    let mut rows = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = read(&root.join(class))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            rows.push(Row {
                line: rows.len() + 1,
                file,
                caption: class.replace('_', " "),
                label: Some(label),
            });
        }
    }
    Ok((rows, classes))
}

/// Writes the rows as shards plus `stats.json` (and `classnames.txt` for labelled rows).
pub fn import(
    rows: &[Row],
    classnames: Option<&[String]>,
    opts: &ImportOptions,
) -> Result<ImportStats, ImportError> {
    import_until(rows, classnames, opts, &|| false)
}

/// [`import`], stopping between rows once `stopped()` says so. The whole build is staged
/// (see [`Staging`]) and moved into `opts.out` complete, `stats.json` last: a stopped or failed
/// build leaves nothing under a final name, and a killed one's staging folder is removed by
/// the next build into the folder.
pub fn import_until(
    rows: &[Row],
    classnames: Option<&[String]>,
    opts: &ImportOptions,
    stopped: &dyn Fn() -> bool,
) -> Result<ImportStats, ImportError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .expect("thread pool");
    let staging = Staging::new(&opts.out, "build")?;
    let mut writer = ShardWriter::new(staging.dir(), &opts.prefix, opts.shard_size)?;
    let mut failures = Vec::new();
    let mut written = 0;
    let stop = |done: usize| ImportError::Stopped {
        done,
        rows: rows.len(),
        out: opts.out.clone(),
    };
    for (c, chunk) in rows.chunks(256).enumerate() {
        if stopped() {
            return Err(stop(c * 256));
        }
        let encoded: Vec<Loaded> = pool.install(|| {
            chunk
                .par_iter()
                .map_init(Resizer::new, |rs, row| load_image(&row.file, opts, rs))
                .collect()
        });
        for (i, (row, result)) in chunk.iter().zip(encoded).enumerate() {
            if stopped() {
                return Err(stop(c * 256 + i));
            }
            match result {
                Ok((jpg, w, h)) => {
                    let key = format!("{written:09}");
                    let meta = serde_json::json!({
                        "key": key, "file": row.file.display().to_string(), "caption": row.caption,
                        "width": w, "height": h, "label": row.label,
                    });
                    let meta = serde_json::to_vec(&meta).expect("json");
                    let cls = row.label.map(|l| l.to_string());
                    let mut members: Vec<(&str, &[u8])> = vec![
                        ("jpg", &jpg),
                        ("txt", row.caption.as_bytes()),
                        ("json", &meta),
                    ];
                    if let Some(c) = &cls {
                        members.push(("cls", c.as_bytes()));
                    }
                    writer.write(&key, &members)?;
                    written += 1;
                }
                Err(reason) => {
                    tracing::warn!(
                        "{} (line {}): {reason}; row skipped",
                        row.file.display(),
                        row.line
                    );
                    failures.push(Failure {
                        line: row.line,
                        file: row.file.display().to_string(),
                        reason,
                    });
                }
            }
        }
    }
    // The paths the shards will have once published.
    let shards: Vec<ShardInfo> = writer
        .finish()?
        .into_iter()
        .map(|s| ShardInfo {
            path: opts.out.join(s.path.file_name().expect("a shard file")),
            samples: s.samples,
        })
        .collect();
    let spec = match shards.len() {
        0 => String::new(),
        1 => shards[0].path.display().to_string(),
        n => format!(
            "{}/{}-{{000000..{:06}}}.tar",
            opts.out.display(),
            opts.prefix,
            n - 1
        ),
    };
    let stats = ImportStats {
        rows: rows.len(),
        written,
        failed: failures.len(),
        failures,
        shards,
        spec,
        classnames: classnames.map(<[String]>::to_vec),
    };
    let write = |name: &str, text: String| {
        let p = staging.dir().join(name);
        std::fs::write(&p, text).map_err(|source| ImportError::Read { path: p, source })
    };
    let mut files: Vec<String> = stats
        .shards
        .iter()
        .map(|s| {
            s.path
                .file_name()
                .expect("a shard file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if let Some(names) = classnames {
        write(
            "classnames.txt",
            names
                .iter()
                .map(|n| format!("{}\n", n.replace('_', " ")))
                .collect(),
        )?;
        files.push("classnames.txt".into());
    }
    write(
        "stats.json",
        serde_json::to_string_pretty(&stats).expect("json") + "\n",
    )?;
    files.push("stats.json".into());
    staging.publish(&files)?;
    warn_earlier_shards(&opts.out, &opts.prefix, stats.shards.len());
    Ok(stats)
}

/// Shards of an earlier, longer build with the same prefix stay beside the new ones (they are
/// not this build's to delete), but a spec or glob over the folder would read them: say so.
fn warn_earlier_shards(out: &Path, prefix: &str, written: usize) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    let mut extra: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(&format!("{prefix}-"))
                .and_then(|r| r.strip_suffix(".tar"))
                .filter(|i| i.len() == 6)
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= written)
        })
        .collect();
    if !extra.is_empty() {
        extra.sort();
        tracing::warn!(
            "{} also holds {} shard(s) of an earlier build ({}); they are not part of this one \
             (see stats.json): remove them before reading the folder with a spec or glob",
            out.display(),
            extra.len(),
            extra.join(", ")
        );
    }
}

/// The JPEG bytes to store for one image and its stored size, or why it cannot be used.
type Loaded = Result<(Vec<u8>, u32, u32), String>;

/// Reads, validates and (when needed) resizes and re-encodes one image.
fn load_image(path: &Path, opts: &ImportOptions, resizer: &mut Resizer) -> Loaded {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read image: {e}"))?;
    let (w, h, rgb) =
        decode_rgb8(&bytes, opts.max_pixels).map_err(|r| format!("image rejected: {r}"))?;
    let is_jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
    let limit = if opts.max_side == 0 {
        u32::MAX
    } else {
        opts.max_side
    };
    if is_jpeg && w.max(h) <= limit {
        return Ok((bytes, w, h));
    }
    let (tw, th) = if w.max(h) > limit {
        let s = limit as f64 / w.max(h) as f64;
        (
            ((w as f64 * s).round() as u32).max(1),
            ((h as f64 * s).round() as u32).max(1),
        )
    } else {
        (w, h)
    };
    let pixels = if (tw, th) == (w, h) {
        rgb
    } else {
        let src = ImageRef::new(w, h, &rgb, PixelType::U8x3).map_err(|e| e.to_string())?;
        let mut dst = Image::new(tw, th, PixelType::U8x3);
        let o = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fr::FilterType::CatmullRom));
        resizer
            .resize(&src, &mut dst, &o)
            .map_err(|e| e.to_string())?;
        dst.into_vec()
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&pixels, tw, th, image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("cannot encode JPEG: {e}"))?;
    Ok((out, tw, th))
}

/// One CSV record (RFC 4180 quoting: `"a, b"`, `""` for a quote inside quotes).
fn parse_csv_line(line: &str) -> Result<Vec<String>, String> {
    let (mut fields, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::parse_csv_line;

    #[test]
    fn csv_quoting() {
        assert_eq!(parse_csv_line("a.jpg,a dog").unwrap(), ["a.jpg", "a dog"]);
        assert_eq!(
            parse_csv_line(r#"b.jpg,"a dog, running""#).unwrap(),
            ["b.jpg", "a dog, running"]
        );
        assert_eq!(
            parse_csv_line(r#""c d.jpg","say ""hi""""#).unwrap(),
            ["c d.jpg", "say \"hi\""]
        );
        assert_eq!(
            parse_csv_line("d.jpg,a, b").unwrap(),
            ["d.jpg", "a", " b"],
            "caller re-joins extra columns"
        );
        assert!(parse_csv_line(r#"x,"open"#).is_err());
    }
}

//! Where generated samples go: JPEG-encoded tar members, written as shards or as loose files
//! (an ImageFolder eval tree and `images/` + `captions.csv`, as a user's own data arrives).
use super::{JPEG_QUALITY, Sample, Split, SynthError};
use crate::data::writer::ShardWriter;
use std::fs;
use std::path::{Path, PathBuf};

/// A sample as its tar members.
pub(super) struct Encoded {
    pub(super) jpg: Vec<u8>,
    pub(super) txt: String,
    pub(super) cls: Option<String>,
    pub(super) objects: usize,
}

pub(super) fn encode(split: Split, index: usize, sample: Sample) -> Result<Encoded, SynthError> {
    let mut jpg = Vec::with_capacity(4096);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, JPEG_QUALITY)
        .encode_image(&sample.image)
        .map_err(|source| SynthError::Encode {
            split: split.prefix(),
            index,
            source,
        })?;
    Ok(Encoded {
        jpg,
        txt: sample.caption,
        cls: match split {
            Split::Eval => sample.label.map(|l| l.to_string()),
            Split::Train => None,
        },
        objects: sample.objects.len(),
    })
}

/// The brace spec covering `n` shards named `prefix-NNNNNN.tar` in `dir`.
pub(super) fn brace_spec(dir: &Path, prefix: &str, n: usize) -> String {
    let name = match n {
        0 => return String::new(),
        1 => ShardWriter::shard_name(prefix, 0),
        _ => format!("{prefix}-{{{:06}..{:06}}}.tar", 0, n - 1),
    };
    dir.join(name).display().to_string()
}

/// Where encoded samples go: shards, or loose files as a user's own data arrives.
pub(super) enum Sink {
    Shards(ShardWriter),
    Folder {
        dir: PathBuf,
        /// Training captions, `file,caption` rows relative to `dir`.
        csv: Vec<String>,
        classes: Vec<String>,
    },
}

impl Sink {
    pub(super) fn write(&mut self, key: &str, e: &Encoded) -> Result<(), SynthError> {
        match self {
            Sink::Shards(writer) => {
                let mut members: Vec<(&str, &[u8])> =
                    vec![("jpg", e.jpg.as_slice()), ("txt", e.txt.as_bytes())];
                if let Some(cls) = &e.cls {
                    members.push(("cls", cls.as_bytes()));
                }
                writer.write(key, &members)?;
            }
            Sink::Folder { dir, csv, classes } => {
                // Eval images go to eval/<class>/ (spaces as underscores, as ImageFolders
                // are usually named); training images to images/ with a captions.csv row.
                let folder = match &e.cls {
                    Some(cls) => {
                        let label: usize = cls.parse().expect("labels are written as integers");
                        dir.join(classes[label].replace(' ', "_"))
                    }
                    None => {
                        csv.push(format!("{key}.jpg,\"{}\"", e.txt.replace('"', "\"\"")));
                        dir.clone()
                    }
                };
                fs::create_dir_all(&folder).map_err(|source| SynthError::Io {
                    op: "creating",
                    path: folder.clone(),
                    source,
                })?;
                let path = folder.join(format!("{key}.jpg"));
                fs::write(&path, &e.jpg).map_err(|source| SynthError::Io {
                    op: "writing",
                    path,
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// Removes shards (and leftover `.tmp` files) of an earlier run in `dir`, so a smaller run does
/// not leave stale shards that a brace spec or glob would pick up. Only names this generator
/// writes (`train-NNNNNN.tar`, `eval-NNNNNN.tar`, with optional `.tmp`) are touched.
pub(super) fn remove_old_shards(dir: &Path) -> Result<(), SynthError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError::Io { op, path, source }
    };
    for entry in fs::read_dir(dir).map_err(io("listing", dir))? {
        let entry = entry.map_err(io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".tmp").unwrap_or(&name);
        let number = ["train-", "eval-"]
            .iter()
            .find_map(|p| stem.strip_prefix(p)?.strip_suffix(".tar"));
        if number.is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit())) {
            fs::remove_file(entry.path()).map_err(io("removing stale shard", &entry.path()))?;
        }
    }
    Ok(())
}

pub(super) fn write_text(path: PathBuf, lines: &[String]) -> Result<(), SynthError> {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(&path, text).map_err(|source| SynthError::Io {
        op: "writing",
        path,
        source,
    })
}

//! CLIP_benchmark's WebDataset folders, read as `clip_benchmark_export_wds` writes them:
//!
//! ```text
//! DIR/classnames.txt                          line i = class i (classification, multilabel)
//! DIR/zeroshot_classification_templates.txt   one per line, {c} for the class name
//! DIR/dataset_type.txt                        "retrieval", "multilabel"; absent = classification
//! DIR/<split>/nshards.txt                     the number of shards N
//! DIR/<split>/0.tar ... (N-1).tar             KEY.webp|png|jpg|jpeg + KEY.cls (class id),
//!                                             KEY.txt (captions, one per line; retrieval),
//!                                             KEY.npy (multi-hot vector; multilabel)
//! ```
//!
//! Samples are read in order with the tar reader of the data layer and decoded in parallel with
//! the eval transform, like an ImageFolder.
use super::EvalError;
use super::batches::{EvalBatch, EvalImages, Want};
use super::prompts::{normalize_template, read_lines};
use crate::data::pixels::hwc_to_chw;
use crate::data::tarstream::{RawSample, SampleReader, TarEvent};
use crate::data::{SkipCounts, SkipReason};
use fast_image_resize::Resizer;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What a CLIP_benchmark set is for (`dataset_type.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    Classification,
    Retrieval,
    Multilabel,
}

/// Image members CLIP_benchmark's reader accepts, in its order.
const IMAGE_EXTS: [&str; 4] = ["webp", "png", "jpg", "jpeg"];

/// One split of a CLIP_benchmark folder, its metadata read and its shards checked to exist.
#[derive(Debug, Clone)]
pub struct BenchmarkSet {
    pub root: PathBuf,
    pub split: String,
    pub kind: SetKind,
    pub shards: Vec<PathBuf>,
    /// `classnames.txt`, when present.
    pub classnames: Option<Vec<String>>,
    /// `zeroshot_classification_templates.txt` with `{c}` rewritten to `{}`, when present.
    pub templates: Option<Vec<String>>,
}

/// Whether `dir` looks like a CLIP_benchmark folder: a `dataset_type.txt`, or a sub-folder
/// holding `nshards.txt`. An ImageFolder has neither.
pub fn is_benchmark_dir(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    if dir.join("dataset_type.txt").is_file() {
        return true;
    }
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.path().join("nshards.txt").is_file())
    })
}

fn splits_of(dir: &Path) -> Vec<String> {
    let mut s: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("nshards.txt").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s
}

/// `0.tar .. n-1.tar` of `split_dir`, each checked to exist. `n` comes from a file, so it is
/// first compared with the `.tar` files the folder holds: a count of 10^12 is refused before a
/// single path is built, and memory stays bounded by what is on disk.
fn shard_paths(split_dir: &Path, n: usize, nshards_path: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let input = |m: String| EvalError::Input(m);
    let entries = std::fs::read_dir(split_dir)
        .map_err(|e| input(format!("listing {}: {e}", split_dir.display())))?;
    let tars = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
        .count();
    if n > tars {
        return Err(input(format!(
            "{} says {n} shards but {} holds {tars} .tar file(s); the download is incomplete or \
             the count is wrong (it must be the number of shards, 0.tar .. N-1.tar)",
            nshards_path.display(),
            split_dir.display()
        )));
    }
    let shards: Vec<PathBuf> = (0..n).map(|i| split_dir.join(format!("{i}.tar"))).collect();
    if let Some(missing) = shards.iter().find(|p| !p.is_file()) {
        return Err(input(format!(
            "{} says {n} shards but {} is missing; the download is incomplete",
            nshards_path.display(),
            missing.display()
        )));
    }
    Ok(shards)
}

impl BenchmarkSet {
    /// Reads `dir`'s metadata and the `split` sub-folder's shard count.
    pub fn open(dir: &Path, split: &str) -> Result<Self, EvalError> {
        let input = |m: String| EvalError::Input(m);
        let split_dir = dir.join(split);
        let nshards_path = split_dir.join("nshards.txt");
        if !nshards_path.is_file() {
            let have = splits_of(dir);
            return Err(input(format!(
                "{}: no split \"{split}\" ({} is missing); this folder has {}; choose one with --split \
                 (or `split` in a suite task)",
                dir.display(),
                nshards_path.display(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
        let text = std::fs::read_to_string(&nshards_path)
            .map_err(|e| input(format!("reading {}: {e}", nshards_path.display())))?;
        let n: usize = text.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            input(format!(
                "{}: \"{}\" is not a shard count; it must hold one whole number >= 1 \
                 (shards 0.tar .. N-1.tar)",
                nshards_path.display(),
                text.trim()
            ))
        })?;
        let shards = shard_paths(&split_dir, n, &nshards_path)?;
        let type_path = dir.join("dataset_type.txt");
        let kind = if type_path.is_file() {
            let t = std::fs::read_to_string(&type_path)
                .map_err(|e| input(format!("reading {}: {e}", type_path.display())))?;
            match t.trim().to_ascii_lowercase().as_str() {
                "" | "classification" => SetKind::Classification,
                "retrieval" => SetKind::Retrieval,
                "multilabel" => SetKind::Multilabel,
                other => {
                    return Err(input(format!(
                        "{}: unknown dataset type \"{other}\"; CLIP_benchmark writes \"retrieval\" \
                         or \"multilabel\" (no file = classification)",
                        type_path.display()
                    )));
                }
            }
        } else {
            SetKind::Classification
        };
        let optional = |name: &str, what: &str| -> Result<Option<Vec<String>>, EvalError> {
            let p = dir.join(name);
            if p.is_file() {
                read_lines(&p, what).map(Some)
            } else {
                Ok(None)
            }
        };
        let classnames = optional("classnames.txt", "class name")?;
        let templates = optional("zeroshot_classification_templates.txt", "template")?
            .map(|t| t.iter().map(|t| normalize_template(t)).collect());
        Ok(Self {
            root: dir.to_path_buf(),
            split: split.to_string(),
            kind,
            shards,
            classnames,
            templates,
        })
    }

    /// `DIR (split)`, for reports.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.root.display(), self.split)
    }
}

/// Batches of a [`BenchmarkSet`], read shard after shard, in order.
pub struct BenchmarkBatches {
    shards: std::vec::IntoIter<PathBuf>,
    reader: Option<(PathBuf, SampleReader<std::io::BufReader<std::fs::File>>)>,
    want: Want,
    classes: usize,
    prep: EvalImages,
    pool: rayon::ThreadPool,
    pub(crate) skipped: SkipCounts,
}

/// A sample's target, before decoding.
enum Target {
    /// Only the image is wanted (embedding a collection).
    Nothing,
    Label(i64),
    Labels(Vec<bool>),
    Captions(Vec<String>),
}

impl BenchmarkBatches {
    /// `classes` is the width multilabel vectors must have (ignored otherwise).
    pub fn new(
        set: &BenchmarkSet,
        want: Want,
        classes: usize,
        prep: &EvalImages,
    ) -> Result<Self, EvalError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(prep.workers.max(1))
            .build()
            .map_err(|e| EvalError::Input(e.to_string()))?;
        Ok(Self {
            shards: set.shards.clone().into_iter(),
            reader: None,
            want,
            classes,
            prep: prep.clone(),
            pool,
            skipped: SkipCounts::default(),
        })
    }

    fn next_raw(&mut self) -> Result<Option<RawSample>, EvalError> {
        loop {
            if self.reader.is_none() {
                let Some(path) = self.shards.next() else {
                    return Ok(None);
                };
                let f = std::fs::File::open(&path).map_err(|e| {
                    EvalError::Input(format!("opening shard {}: {e}", path.display()))
                })?;
                self.reader = Some((path, SampleReader::new(std::io::BufReader::new(f))));
            }
            let (path, reader) = self.reader.as_mut().expect("opened above");
            match reader.next_event() {
                Some(TarEvent::Sample(s)) => return Ok(Some(s)),
                Some(TarEvent::Skipped(reason)) => self.skipped.add(reason),
                Some(TarEvent::Broken(reason, msg)) => {
                    tracing::warn!("{}: {msg}; the rest of the shard is lost", path.display());
                    self.skipped.add(reason);
                }
                None => self.reader = None,
            }
        }
    }

    fn target(&self, raw: &RawSample) -> Result<Target, SkipReason> {
        match self.want {
            Want::Images => Ok(Target::Nothing),
            Want::Labels => {
                let b = raw.member("cls").ok_or(SkipReason::BadLabel)?;
                let t = std::str::from_utf8(b).map_err(|_| SkipReason::BadLabel)?;
                t.trim()
                    .parse()
                    .map(Target::Label)
                    .map_err(|_| SkipReason::BadLabel)
            }
            Want::Captions => {
                let b = raw.member("txt").ok_or(SkipReason::MissingCaption)?;
                let t = std::str::from_utf8(b).map_err(|_| SkipReason::InvalidUtf8)?;
                let caps: Vec<String> = t
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if caps.is_empty() {
                    return Err(SkipReason::EmptyCaption);
                }
                Ok(Target::Captions(caps))
            }
            Want::MultiLabels => Err(SkipReason::BadLabel),
        }
    }

    /// The multi-hot target of a multilabel sample: `.npy` (as CLIP_benchmark reads them) or a
    /// `.cls` listing class ids separated by spaces or commas.
    fn multi_target(&self, raw: &RawSample) -> Result<Target, EvalError> {
        let shard = self
            .reader
            .as_ref()
            .map(|(p, _)| format!("{}: ", p.display()))
            .unwrap_or_default();
        let bad = |why: String| {
            EvalError::Input(format!(
                "{shard}sample {}: {why}; a multilabel sample needs KEY.npy, a vector of {} 0/1 \
                 values (one per line of classnames.txt), or KEY.cls with class ids",
                raw.key, self.classes
            ))
        };
        let hot = if let Some(npy) = raw.member("npy") {
            let v = super::npy::read_vector(npy).map_err(|e| bad(format!("its .npy {e}")))?;
            if v.len() != self.classes {
                return Err(bad(format!(
                    "its .npy holds {} values but the class names list {} classes",
                    v.len(),
                    self.classes
                )));
            }
            v.iter().map(|&x| x > 0.0).collect()
        } else if let Some(cls) = raw.member("cls") {
            let t = std::str::from_utf8(cls).map_err(|_| bad("its .cls is not text".into()))?;
            let mut hot = vec![false; self.classes];
            for id in t.split(|c: char| c == ',' || c.is_whitespace()) {
                if id.is_empty() {
                    continue;
                }
                let i: usize = id
                    .parse()
                    .ok()
                    .filter(|&i| i < self.classes)
                    .ok_or_else(|| {
                        bad(format!("class id \"{id}\" is not in 0..{}", self.classes))
                    })?;
                hot[i] = true;
            }
            hot
        } else {
            return Err(bad("it has neither .npy nor .cls".into()));
        };
        Ok(Target::Labels(hot))
    }

    /// The next batch; `None` after the last shard.
    pub fn next_batch(&mut self) -> Result<Option<EvalBatch>, EvalError> {
        let p = self.prep.clone();
        let transform = p.transform();
        let plane = (p.size * p.size) as usize;
        loop {
            let mut chunk: Vec<(String, Vec<u8>, Target)> = Vec::new();
            while chunk.len() < p.batch_size.max(1) {
                let Some(mut raw) = self.next_raw()? else {
                    break;
                };
                let target = if self.want == Want::MultiLabels {
                    self.multi_target(&raw)?
                } else {
                    match self.target(&raw) {
                        Ok(t) => t,
                        Err(reason) => {
                            self.skipped.add(reason);
                            continue;
                        }
                    }
                };
                let Some(i) = IMAGE_EXTS
                    .iter()
                    .find_map(|e| raw.members.iter().position(|(x, _)| x == e))
                else {
                    self.skipped.add(SkipReason::MissingImage);
                    continue;
                };
                let bytes = raw.members.swap_remove(i).1;
                chunk.push((raw.key, bytes, target));
            }
            if chunk.is_empty() {
                return Ok(None);
            }
            let decoded: Vec<Result<Vec<u8>, SkipReason>> = self.pool.install(|| {
                chunk
                    .par_iter()
                    .map_init(Resizer::new, |rs, (_, bytes, _)| {
                        let rgb = transform.apply(bytes, 0, rs)?;
                        let mut chw = vec![0u8; 3 * plane];
                        hwc_to_chw(&rgb, &mut chw);
                        Ok(chw)
                    })
                    .collect()
            });
            let (mut keys, mut labels, mut multi_hot, mut captions) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * plane);
            let mut n = 0i64;
            for ((key, _, target), r) in chunk.into_iter().zip(decoded) {
                let chw = match r {
                    Ok(chw) => chw,
                    Err(reason) => {
                        tracing::debug!("skipping {key}: {}", reason.as_str());
                        self.skipped.add(reason);
                        continue;
                    }
                };
                pixels.extend_from_slice(&chw);
                keys.push(key);
                match target {
                    Target::Nothing => {}
                    Target::Label(l) => labels.push(l),
                    Target::Labels(h) => multi_hot.push(h),
                    Target::Captions(c) => captions.push(c),
                }
                n += 1;
            }
            if n == 0 {
                continue;
            }
            let s = p.size as i64;
            return Ok(Some(EvalBatch {
                images: tch::Tensor::from_slice(&pixels).view([n, 3, s, s]),
                keys,
                labels,
                captions,
                multi_hot,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split folder `test/` holding `tars` empty shards and `nshards.txt` = `count`.
    fn split(tars: usize, count: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("test");
        std::fs::create_dir(&s).unwrap();
        for i in 0..tars {
            std::fs::write(s.join(format!("{i}.tar")), b"").unwrap();
        }
        std::fs::write(s.join("nshards.txt"), count).unwrap();
        dir
    }

    #[test]
    fn a_huge_shard_count_is_refused_against_the_files_present() {
        // 10^12 once asked for 24 TB of paths, 10^8 for 5.9 GB, before any was checked.
        for count in ["1000000000000", "100000000", "3"] {
            let dir = split(2, count);
            let e = BenchmarkSet::open(dir.path(), "test")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("says {count} shards"))
                    && e.contains("holds 2 .tar file(s)")
                    && e.contains("nshards.txt"),
                "{e}"
            );
        }
        let dir = split(2, "2");
        assert_eq!(
            BenchmarkSet::open(dir.path(), "test").unwrap().shards.len(),
            2
        );
        // As many .tar files as said, but not the numbered ones.
        let dir = split(0, "1");
        std::fs::write(dir.path().join("test/other.tar"), b"").unwrap();
        let e = BenchmarkSet::open(dir.path(), "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.tar is missing"), "{e}");
        for bad in ["0", "-1", "lots", "18446744073709551616"] {
            let dir = split(1, bad);
            let e = BenchmarkSet::open(dir.path(), "test")
                .unwrap_err()
                .to_string();
            assert!(e.contains("is not a shard count"), "{bad}: {e}");
        }
    }
}

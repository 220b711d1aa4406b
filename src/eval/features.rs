//! Frozen image features of a labelled set for probes (`eval linear-probe`, `eval knn`):
//! encoded once per (model, set, preprocessing) and cached as safetensors, so a sweep over
//! weight decays, shot counts or k re-encodes nothing.
mod key;

pub use key::model_key;

use super::batches::{EvalImages, Want};
use super::probe::Features;
use super::{Encoder, EvalError, ZeroShotTask};
use crate::data::stream::stable_hash;
use key::DataKey;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How a set's features were obtained.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Extraction {
    pub samples: usize,
    /// Read from the cache instead of encoded.
    pub cached: bool,
    /// Images per second of reading, decoding and encoding (0 when cached).
    pub images_per_s: f64,
    pub skipped: String,
}

/// Where features are cached: one safetensors file per (model, set, class names,
/// preprocessing), holding the features, the labels and the key of the data's files they were
/// encoded from.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    pub dir: PathBuf,
    /// Identifies the model's weights (see [`model_key`]).
    pub model: String,
    /// The model's embedding width: cached features of another width are not this model's.
    pub width: usize,
}

impl FeatureCache {
    /// The entry's file and the key it must hold.
    fn entry(&self, data: &DataKey, prep: &EvalImages) -> (PathBuf, String) {
        let slot = format!(
            "{}\0{}\0{}\0{:?}\0{:?}\0{}",
            self.model, data.identity, prep.size, prep.mean, prep.std, prep.max_pixels
        );
        let slot = stable_hash(&slot);
        let path = self.dir.join(format!("{slot}.safetensors"));
        (path, format!("{slot}-{}", data.files))
    }
}

/// The L2-normalised image features and labels of the labelled set of `task` (shards with
/// `.cls`, an ImageFolder or a CLIP_benchmark split), from `cache` when it has them.
pub fn labelled_features(
    task: &ZeroShotTask,
    enc: &Encoder,
    prep: &EvalImages,
    cache: Option<&FeatureCache>,
) -> Result<(Features, Extraction), EvalError> {
    let (spec, classnames) = (&task.data, &task.classnames);
    if task.is_multilabel() {
        return Err(EvalError::Input(format!(
            "{spec}: a multilabel set has no single class per image for a probe; use a \
             classification set"
        )));
    }
    let entry = cache.and_then(|c| match DataKey::of(task) {
        Some(data) => Some((c.entry(&data, prep), c.width)),
        None => {
            tracing::info!("{spec}: features not cached (a pipe: shard may change unseen)");
            None
        }
    });
    if let Some(((path, key), width)) = &entry {
        let expect = Expect {
            key,
            width: *width,
            classes: classnames.len(),
        };
        match read_cached(path, &expect) {
            Cached::Absent => {}
            Cached::Usable(f) => {
                tracing::info!("features of {spec} from the cache {}", path.display());
                let extraction = Extraction {
                    samples: f.len(),
                    cached: true,
                    images_per_s: 0.0,
                    skipped: String::new(),
                };
                return Ok((f, extraction));
            }
            Cached::Rebuild(why) => {
                tracing::warn!(
                    "feature cache {} {why}; encoding {spec} again",
                    path.display()
                );
            }
        }
    }
    let started = Instant::now();
    let mut batches = task.batches(Want::Labels, enc, prep)?;
    let pixels = prep.pixel_norm(enc.device());
    let (mut parts, mut labels) = (Vec::new(), Vec::new());
    while let Some(b) = batches.next_batch()? {
        let c = classnames.len() as i64;
        if let Some((key, bad)) = b
            .keys
            .iter()
            .zip(&b.labels)
            .find(|(_, l)| !(0..c).contains(*l))
        {
            return Err(EvalError::Input(format!(
                "{spec}: sample {key} has label {bad}, but there are {c} class names; use the \
                 classnames file the set was made with"
            )));
        }
        parts.push(enc.images(&b.images, &pixels)?.to_device(Device::Cpu));
        labels.extend(b.labels);
    }
    if labels.is_empty() {
        return Err(EvalError::Input(format!(
            "{spec}: no usable labelled sample (skipped: {})",
            batches.skipped()
        )));
    }
    let f = Features {
        x: Tensor::cat(&parts, 0).to_kind(Kind::Float),
        y: labels,
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(((p, key), _)) = &entry {
        // A cache that cannot be written costs a re-encode next time, nothing else.
        if let Err(e) = write_cached(p, key, &f) {
            tracing::warn!("cannot cache features in {}: {e}", p.display());
        }
    }
    let extraction = Extraction {
        samples: f.len(),
        cached: false,
        images_per_s: f.len() as f64 / seconds.max(1e-9),
        skipped: batches.skipped().to_string(),
    };
    Ok((f, extraction))
}

/// What a cache entry must hold to be used.
struct Expect<'a> {
    key: &'a str,
    width: usize,
    classes: usize,
}

/// What the cache has for a set.
enum Cached {
    Absent,
    Usable(Features),
    /// Present but stale or invalid: why, for the warning.
    Rebuild(String),
}

/// The entry at `path`, checked against `expect` before anything else trusts it: the data key
/// (a set rewritten in place), the tensors' names, ranks and dtypes, the model's width, one
/// label per row, labels among the classes, finite features.
fn read_cached(path: &Path, expect: &Expect) -> Cached {
    if !path.exists() {
        return Cached::Absent;
    }
    match check_cached(path, expect) {
        Ok(f) => Cached::Usable(f),
        Err(why) => Cached::Rebuild(why),
    }
}

fn check_cached(path: &Path, expect: &Expect) -> Result<Features, String> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| format!("is not readable ({e})"))?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("has no \"{name}\" tensor (an older or foreign file)"))
    };
    let (x, y, key) = (get("features")?, get("labels")?, get("key")?);
    let key = (key.kind() == Kind::Uint8 && key.dim() == 1)
        .then(|| Vec::<u8>::try_from(key).ok())
        .flatten()
        .and_then(|k| String::from_utf8(k).ok())
        .unwrap_or_default();
    if key != expect.key {
        // The key is `slot-files`: the slot names the file, so only a copied or foreign file
        // differs there.
        let slot = |k: &str| k.split('-').next().unwrap_or_default().to_string();
        return Err(match slot(&key) == slot(expect.key) {
            true => "is stale: the data's files (names, sizes or modification times) changed \
                     since it was written"
                .into(),
            false => "holds the features of another model or set".into(),
        });
    }
    if x.dim() != 2 || x.kind() != Kind::Float {
        return Err(format!(
            "holds features of shape {:?} and dtype {:?}, not [samples, width] float32",
            x.size(),
            x.kind()
        ));
    }
    let [rows, width] = [x.size()[0], x.size()[1]];
    if width != expect.width as i64 {
        return Err(format!(
            "holds {width}-wide features, but the model's embedding width is {}",
            expect.width
        ));
    }
    if y.dim() != 1 || y.kind() != Kind::Int64 || y.size()[0] != rows || rows == 0 {
        return Err(format!(
            "holds labels of shape {:?} and dtype {:?} for {rows} feature rows, not one int64 \
             label per row",
            y.size(),
            y.kind()
        ));
    }
    let labels = Vec::<i64>::try_from(y).map_err(|e| format!("has unreadable labels ({e})"))?;
    if let Some(bad) = labels
        .iter()
        .find(|&&l| !(0..expect.classes as i64).contains(&l))
    {
        return Err(format!(
            "holds label {bad}, outside the {} classes",
            expect.classes
        ));
    }
    let bad = x.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
    if bad > 0 {
        return Err(format!(
            "holds {bad} non-finite (NaN or infinite) feature values"
        ));
    }
    Ok(Features {
        x: x.shallow_clone(),
        y: labels,
    })
}

/// Written to a temporary file and renamed, so a killed run never leaves half a cache; the
/// temporary is removed when the write fails.
fn write_cached(path: &Path, key: &str, f: &Features) -> Result<(), String> {
    let dir = path.parent().ok_or("no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let tensors = [
        ("features", f.x.shallow_clone()),
        ("labels", Tensor::from_slice(&f.y)),
        ("key", Tensor::from_slice(key.as_bytes())),
    ];
    let written = Tensor::write_safetensors(&tensors, &tmp)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: i64, width: i64) -> Features {
        Features {
            x: Tensor::ones([rows, width], (Kind::Float, Device::Cpu)),
            y: (0..rows).map(|i| i % 3).collect(),
        }
    }

    const KEY: &str = "00000000000000aa-00000000000000bb";

    fn expect(width: usize) -> Expect<'static> {
        Expect {
            key: KEY,
            width,
            classes: 3,
        }
    }

    /// Why the entry at `path` is rebuilt, or "usable".
    fn verdict(path: &Path, e: &Expect) -> String {
        match read_cached(path, e) {
            Cached::Absent => "absent".into(),
            Cached::Usable(_) => "usable".into(),
            Cached::Rebuild(why) => why,
        }
    }

    #[test]
    fn an_entry_is_used_only_with_its_key_width_labels_and_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        assert_eq!(verdict(&path, &expect(32)), "absent");
        write_cached(&path, KEY, &features(48, 32)).unwrap();
        assert_eq!(verdict(&path, &expect(32)), "usable");
        // The cache folder holds the entry alone: the temporary was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // The data rewritten in place: same slot, other files.
        let stale = Expect {
            key: "00000000000000aa-00000000000000cc",
            ..expect(32)
        };
        assert!(
            verdict(&path, &stale).contains("is stale"),
            "{}",
            verdict(&path, &stale)
        );
        let foreign = Expect {
            key: "00000000000000dd-00000000000000bb",
            ..expect(32)
        };
        assert!(verdict(&path, &foreign).contains("another model or set"));

        // [48, 7] for a 32-wide model (issue 27, item 11).
        write_cached(&path, KEY, &features(48, 7)).unwrap();
        let why = verdict(&path, &expect(32));
        assert!(
            why.contains("7-wide") && why.contains("width is 32"),
            "{why}"
        );

        // All NaN, or one infinity.
        let mut nan = features(48, 32);
        nan.x *= f64::NAN;
        write_cached(&path, KEY, &nan).unwrap();
        assert!(verdict(&path, &expect(32)).contains("1536 non-finite"));
        let inf = features(48, 32);
        let _ = inf.x.get(3).get(4).fill_(f64::INFINITY);
        write_cached(&path, KEY, &inf).unwrap();
        assert!(verdict(&path, &expect(32)).contains("1 non-finite"));

        // More labels than rows, a label outside the classes, float64 features.
        let mut f = features(48, 32);
        f.y.push(0);
        write_cached(&path, KEY, &f).unwrap();
        assert!(verdict(&path, &expect(32)).contains("one int64 label per row"));
        let mut f = features(48, 32);
        f.y[5] = 3;
        write_cached(&path, KEY, &f).unwrap();
        assert!(verdict(&path, &expect(32)).contains("label 3, outside the 3 classes"));
        let mut f = features(48, 32);
        f.x = f.x.to_kind(Kind::Double);
        write_cached(&path, KEY, &f).unwrap();
        assert!(verdict(&path, &expect(32)).contains("Double"));
    }

    #[test]
    fn a_foreign_or_damaged_file_is_rebuilt_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        // What an older cliptrain wrote: no key.
        let f = features(4, 32);
        Tensor::write_safetensors(
            &[
                ("features", f.x.shallow_clone()),
                ("labels", Tensor::from_slice(&f.y)),
            ],
            &path,
        )
        .unwrap();
        assert!(verdict(&path, &expect(32)).contains("no \"key\" tensor"));
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7f garbage").unwrap();
        assert!(verdict(&path, &expect(32)).contains("not readable"));
    }
}

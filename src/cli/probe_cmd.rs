//! `cliptrain eval linear-probe|knn`: what a model's frozen image features hold, measured as
//! the CLIP paper and CLIP_benchmark do — a logistic-regression probe (also few-shot) and a
//! weighted k-NN, on the train and test splits of a labelled set. Features are cached, so a
//! sweep over shots or k encodes each split once.
use super::eval_cmd::{Common, Session};
use anyhow::bail;
use clap::Args;
use cliptrain::eval::features::{Extraction, FeatureCache, labelled_features, model_key};
use cliptrain::eval::probe::{Features, KnnReport, ProbeOptions, ProbeReport, knn, linear_probe};
use cliptrain::eval::{ZeroShotTask, eval_images};
use std::path::PathBuf;

/// Where the two splits come from.
#[derive(Debug, Args)]
pub struct ProbeData {
    #[command(flatten)]
    pub common: Common,
    /// A CLIP_benchmark folder with a train and a test split (or give --train and --test).
    #[arg(long, conflicts_with_all = ["train", "test"])]
    pub data: Option<String>,
    /// The split of --data the probe is fitted on.
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// The split of --data it is scored on.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Training features: shards with `.cls` labels or an ImageFolder (with --test).
    #[arg(long, requires = "test")]
    pub train: Option<String>,
    /// Test features: shards with `.cls` labels or an ImageFolder (with --train).
    #[arg(long, requires = "train")]
    pub test: Option<String>,
    /// One class name per line, or `builtin:NAME`; default: a CLIP_benchmark folder's.
    #[arg(long)]
    pub classnames: Option<String>,
    /// Cache features here (default: ~/.cache/cliptrain/features, or $XDG_CACHE_HOME).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Encode the images even when cached features exist, and cache nothing.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Debug, Args)]
pub struct LinearProbeArgs {
    #[command(flatten)]
    pub data: ProbeData,
    /// Fit on K training images per class (few-shot; repeat for a sweep); default: all.
    #[arg(long = "shots", value_name = "K")]
    pub shots: Vec<usize>,
    /// Weight decay (repeat for the values to try on a held-out fifth of train); default:
    /// 1e-6, 1e-5, ..., 1e-1.
    #[arg(long = "weight-decay", value_name = "WD")]
    pub weight_decays: Vec<f64>,
    /// L-BFGS iterations per fit.
    #[arg(long, default_value_t = 1000)]
    pub max_iter: usize,
    /// Seeds the few-shot draw and the held-out fifth.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct KnnArgs {
    #[command(flatten)]
    pub data: ProbeData,
    /// Neighbours that vote (repeat for a sweep).
    #[arg(long = "k", default_values_t = [20])]
    pub k: Vec<usize>,
    /// Votes are weighted by exp(cosine similarity / T).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
}

/// The two splits' features, each from the cache or encoded now.
struct Splits {
    train: Features,
    test: Features,
    classes: usize,
    extraction: [Extraction; 2],
    session: Session,
}

impl ProbeData {
    fn tasks(&self) -> anyhow::Result<(ZeroShotTask, ZeroShotTask)> {
        let names = self.classnames.as_deref();
        let task = |data: &str, split: &str| ZeroShotTask::resolve(data, split, names, None, None);
        Ok(match (&self.data, &self.train, &self.test) {
            (Some(d), _, _) => (task(d, &self.train_split)?, task(d, &self.split)?),
            (None, Some(tr), Some(te)) => (task(tr, "train")?, task(te, "test")?),
            _ => bail!("name the data: --data DIR (a CLIP_benchmark folder) or --train and --test"),
        })
    }

    fn features(&self) -> anyhow::Result<Splits> {
        // The device and the files are checked before the model is loaded, so a typo fails
        // fast.
        super::device_arg(&self.common.run.device)?;
        let (train_task, test_task) = self.tasks()?;
        if train_task.classnames != test_task.classnames {
            bail!("the train and test splits need the same class names");
        }
        let session = Session::open(&self.common)?;
        let cache = (!self.no_cache).then(|| FeatureCache {
            dir: self.cache_dir.clone().unwrap_or_else(default_cache_dir),
            model: model_key(&session.loaded.source.dir),
            width: session.loaded.source.spec.embed_dim,
        });
        let prep = eval_images(&session.config, self.common.run.batch_size, session.workers);
        let enc = session.encoder(self.common.run.batch_size);
        let (train, a) = labelled_features(&train_task, &enc, &prep, cache.as_ref())?;
        let (test, b) = labelled_features(&test_task, &enc, &prep, cache.as_ref())?;
        for (task, e) in [(&train_task, &a), (&test_task, &b)] {
            eprintln!("{}", describe(&task.data, e));
        }
        let missing = train.missing_classes(train_task.classnames.len());
        if !missing.is_empty() {
            tracing::warn!(
                "{} of {} classes have no image in the training split {} ({}); nothing can be \
                 learnt for them, so besides top-1 over all classes the result gives top-1 over \
                 the classes that have training images",
                missing.len(),
                train_task.classnames.len(),
                train_task.data,
                first_names(&missing, &train_task.classnames)
            );
        }
        Ok(Splits {
            train,
            test,
            classes: train_task.classnames.len(),
            extraction: [a, b],
            session,
        })
    }
}

/// The first few of `classes` by name, and how many more: for messages about many classes.
fn first_names(classes: &[usize], names: &[String]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = classes
        .iter()
        .take(SHOWN)
        .map(|&c| format!("\"{}\"", names[c]))
        .collect();
    match classes.len().checked_sub(SHOWN).filter(|&n| n > 0) {
        Some(more) => format!("{}, and {more} more", shown.join(", ")),
        None => shown.join(", "),
    }
}

/// The line under a result table for a row whose training split lacked classes: its top-1
/// over the classes that had training images, beside the one over all.
fn coverage_note(
    row: &str,
    missing: &[usize],
    top1: f64,
    trained: Option<f64>,
    trained_samples: usize,
    classes: usize,
) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let have = classes - missing.len();
    Some(match trained {
        Some(t) => format!(
            "{row}: top-1 {:.1}% over the {have} classes with training images ({trained_samples} \
             test images), {:.1}% over all {classes}; {} classes had none",
            100.0 * t,
            100.0 * top1,
            missing.len()
        ),
        None => format!(
            "{row}: no test image is of the {have} classes with training images; top-1 {:.1}% \
             over all {classes}, {} of which had no training image",
            100.0 * top1,
            missing.len()
        ),
    })
}

fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cliptrain/features")
}

fn describe(data: &str, e: &Extraction) -> String {
    if e.cached {
        format!("features of {data}: {} images, from the cache", e.samples)
    } else {
        format!(
            "features of {data}: {} images encoded at {:.1} images/s{}",
            e.samples,
            e.images_per_s,
            if e.skipped.is_empty() || e.skipped == "none" {
                String::new()
            } else {
                format!(" (skipped: {})", e.skipped)
            }
        )
    }
}

pub fn linear_probe_cmd(a: LinearProbeArgs) -> anyhow::Result<()> {
    if a.weight_decays
        .iter()
        .any(|wd| !(wd.is_finite() && *wd >= 0.0))
    {
        bail!("--weight-decay must be a finite number >= 0");
    }
    if a.shots.contains(&0) {
        bail!("--shots must be at least 1");
    }
    let s = a.data.features()?;
    let opts = ProbeOptions {
        weight_decays: if a.weight_decays.is_empty() {
            ProbeOptions::default().weight_decays
        } else {
            a.weight_decays.clone()
        },
        max_iter: a.max_iter,
        seed: a.seed,
    };
    let mut rows: Vec<(Option<usize>, ProbeReport)> = Vec::new();
    let shots: Vec<Option<usize>> = if a.shots.is_empty() {
        vec![None]
    } else {
        a.shots.iter().map(|&k| Some(k)).collect()
    };
    for k in shots {
        let report = match k {
            None => linear_probe(&s.train, &s.test, s.classes, &opts)?,
            Some(k) => {
                let (few, short) = s.train.few_shot(k, s.classes, a.seed);
                if !short.is_empty() {
                    eprintln!(
                        "{k}-shot: {} class(es) have fewer training images",
                        short.len()
                    );
                }
                linear_probe(&few, &s.test, s.classes, &opts)?
            }
        };
        rows.push((k, report));
    }
    println!(
        "| probe | classes | train images | test images | weight decay | top-1 | top-5 | chance top-1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (k, r) in &rows {
        let name = k.map_or("linear".to_string(), |k| format!("linear, {k}-shot"));
        notes.extend(coverage_note(
            &name,
            &r.classes_without_training_images,
            r.top1,
            r.top1_classes_with_training_images,
            r.test_samples_classes_with_training_images,
            r.classes,
        ));
        println!(
            "| {name} | {} | {} | {} | {:e} | {:.1}% | {:.1}% | {:.1}% |",
            r.classes,
            r.train_samples,
            r.test_samples,
            r.weight_decay,
            100.0 * r.top1,
            100.0 * r.top5,
            100.0 / r.classes as f64
        );
    }
    for n in &notes {
        println!("\n{n}");
    }
    if let Some(path) = &a.data.common.json {
        let runs: Vec<serde_json::Value> = rows
            .iter()
            .map(|(k, r)| {
                let mut v = serde_json::to_value(r).expect("a report serialises");
                v["shots"] = serde_json::json!(k);
                v
            })
            .collect();
        let json = serde_json::json!({ "linear_probe": runs, "features": s.extraction });
        s.session.write_json(path, &json)?;
    }
    Ok(())
}

pub fn knn_cmd(a: KnnArgs) -> anyhow::Result<()> {
    if a.k.contains(&0) {
        bail!("--k must be at least 1");
    }
    let s = a.data.features()?;
    let rows: Vec<KnnReport> =
        a.k.iter()
            .map(|&k| knn(&s.train, &s.test, s.classes, k, a.temperature))
            .collect::<Result<_, _>>()?;
    println!("| k-NN | classes | train images | test images | top-1 | top-5 | chance top-1 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for r in &rows {
        notes.extend(coverage_note(
            &format!("k = {}, T = {}", r.k, r.temperature),
            &r.classes_without_training_images,
            r.top1,
            r.top1_classes_with_training_images,
            r.test_samples_classes_with_training_images,
            r.classes,
        ));
        println!(
            "| k = {}, T = {} | {} | {} | {} | {:.1}% | {:.1}% | {:.1}% |",
            r.k,
            r.temperature,
            r.classes,
            r.train_samples,
            r.test_samples,
            100.0 * r.top1,
            100.0 * r.top5,
            100.0 / r.classes as f64
        );
    }
    for n in &notes {
        println!("\n{n}");
    }
    if let Some(path) = &a.data.common.json {
        let json = serde_json::json!({ "knn": rows, "features": s.extraction });
        s.session.write_json(path, &json)?;
    }
    Ok(())
}

//! `cliptrain eval zeroshot|retrieval|suite|builtins`: how good is this model (a checkpoint, or
//! a pretrained Hugging Face or OpenCLIP folder), in the numbers the field reports, on our own
//! sets or CLIP_benchmark's. Tables go to stdout, `--json` (and `--csv` for suites) keep
//! everything.
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cliptrain::config::Config;
use cliptrain::config::Precision;
use cliptrain::eval::report::SuiteColumn;
use cliptrain::eval::{Encoder, Suite, ZeroShotTask, eval_images, prompts, report, retrieval};
use cliptrain::interop::LoadedModel;
use cliptrain::text::TextTokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Zero-shot classification: class names × prompt templates → classifier; top-1/top-5,
    /// per-class recall, confusions, seen vs held-out label groups.
    Zeroshot(ZeroShotArgs),
    /// Image↔text retrieval Recall@1/5/10 over captioned shards or a CLIP_benchmark folder.
    Retrieval(RetrievalArgs),
    /// Every task of a suite file against one or more checkpoints: one table (tasks ×
    /// checkpoints, with chance levels) on stdout, optionally JSON and CSV.
    Suite(SuiteArgs),
    /// The class-name and template lists compiled in, usable as `builtin:NAME`.
    Builtins,
    /// A logistic-regression probe on frozen image features of a train split, scored on a test
    /// split (weight decay chosen on held-out train; `--shots K` for few-shot).
    LinearProbe(Box<super::probe_cmd::LinearProbeArgs>),
    /// Weighted k-NN accuracy of the test split's features among the train split's.
    Knn(Box<super::probe_cmd::KnnArgs>),
}

/// Where and how models are run, for every evaluation command.
#[derive(Debug, Clone, Args)]
pub struct Runtime {
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// `fp32`, or `bf16` autocast; default bf16 on CUDA, fp32 on CPU.
    #[arg(long)]
    pub precision: Option<String>,
    /// Images (and prompts) encoded at once; at least 1.
    #[arg(long, default_value_t = 256, value_parser = super::batch_size_arg)]
    pub batch_size: usize,
    /// libtorch and decode threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Evaluate a checkpoint's moving average of the weights (`ema.safetensors`, trained with
    /// optim.ema_decay) instead of its weights.
    #[arg(long)]
    pub ema: bool,
}

/// What every evaluation needs: the model and where to run it.
#[derive(Debug, Args)]
pub struct Common {
    /// The model: a checkpoint folder, a run folder (its `latest` checkpoint), a Hugging Face
    /// CLIP folder or an OpenCLIP folder (or one weights file in it: FOLDER/epoch_3.pt), or a
    /// model on the Hugging Face Hub: hf:ORG/NAME[@REVISION] (fetched into the HF cache;
    /// HF_HUB_OFFLINE=1: the cache only).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub run: Runtime,
    /// Also write every figure as JSON here.
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub common: Common,
    /// Shards with `.cls` labels (brace expansion, `::` lists), an ImageFolder `DIR/<class>/*`,
    /// or a CLIP_benchmark folder (`DIR/<split>/nshards.txt`, `DIR/classnames.txt`, ...; a
    /// `multilabel` one is scored by mean average precision).
    #[arg(long)]
    pub data: String,
    /// The split of a CLIP_benchmark folder.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// One class name per line (line i is label i), or `builtin:NAME` (`cliptrain eval
    /// builtins`); default: a CLIP_benchmark folder's classnames.txt.
    #[arg(long)]
    pub classnames: Option<String>,
    /// One prompt template per line, `{}` (or `{c}`) where the class name goes, or
    /// `builtin:NAME`; default: a CLIP_benchmark folder's templates, else a generic set.
    #[arg(long)]
    pub templates: Option<String>,
    /// Class names (one per line) reported as the "seen" group; the rest as "held-out".
    #[arg(long)]
    pub classes_subset: Option<PathBuf>,
    /// Draw the confusion matrix to this PNG.
    #[arg(long, value_name = "OUT.png")]
    pub plot: Option<PathBuf>,
    /// Keep the full classes × classes confusion matrix (in --json, for --plot) up to this many
    /// classes; above, the JSON lists only the pairs that occurred and --plot is refused.
    #[arg(long, value_name = "N", default_value_t = cliptrain::eval::metrics::DEFAULT_CONFUSION_MAX_CLASSES)]
    pub confusion_max_classes: usize,
}

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub common: Common,
    /// Captioned shards; several captions per image as numbered members (`KEY.0.txt`, ...) or
    /// a JSON list in `data.json_caption_field` of the checkpoint's config. Or a CLIP_benchmark
    /// retrieval folder (captions one per line in `KEY.txt`).
    #[arg(long)]
    pub data: String,
    /// The split of a CLIP_benchmark folder.
    #[arg(long, default_value = "test")]
    pub split: String,
}

#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The suite: TOML with `[[task]]` entries (name, kind = zeroshot|retrieval|multilabel,
    /// data, optional split, classnames, templates); relative paths are from its folder.
    #[arg(long, value_name = "SUITE.toml")]
    pub suite: PathBuf,
    /// A model to evaluate (checkpoint, run, Hugging Face or OpenCLIP folder, or
    /// hf:ORG/NAME[@REVISION] on the Hub); repeat for a column each.
    #[arg(long, required = true)]
    pub checkpoint: Vec<PathBuf>,
    #[command(flatten)]
    pub run: Runtime,
    /// Also write the table as JSON here (layout in docs/evaluation.md, "Suites").
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
    /// Also write the table as CSV here: one row per task, metric and checkpoint.
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Zeroshot(a) => zeroshot(a),
        EvalCommand::Retrieval(a) => retrieval_cmd(a),
        EvalCommand::Suite(a) => suite_cmd(a),
        EvalCommand::LinearProbe(a) => super::probe_cmd::linear_probe_cmd(*a),
        EvalCommand::Knn(a) => super::probe_cmd::knn_cmd(*a),
        EvalCommand::Builtins => {
            builtins();
            Ok(())
        }
    }
}

pub(super) struct Session {
    pub(super) loaded: LoadedModel,
    /// The tokenizer, or why the folder has none (see [`Encoder::with_text`]).
    tokenizer: Result<Arc<TextTokenizer>, String>,
    /// The checkpoint's config (its data settings), or the defaults for a pretrained folder.
    pub(super) config: Config,
    /// `--precision`; the encoder's default when not given.
    precision: Option<Precision>,
    pub(super) workers: usize,
}

impl Session {
    pub(super) fn open(c: &Common) -> anyhow::Result<Self> {
        let workers = cliptrain::runtime::cpu_threads(c.run.threads, "--threads");
        if c.run.threads > 0 {
            tch::set_num_threads(workers as i32);
        }
        let device = super::device_arg(&c.run.device)?;
        let precision = match c.run.precision.as_deref() {
            None => None,
            Some("fp32") => Some(Precision::Fp32),
            Some("bf16") => Some(Precision::Bf16),
            Some(other) => bail!("--precision {other}: use fp32 or bf16"),
        };
        let loaded = LoadedModel::open_weights(&c.checkpoint, device, c.run.ema)
            .with_context(|| format!("loading model {}", c.checkpoint.display()))?;
        let source = &loaded.source;
        tracing::info!(
            "evaluating {:?} model {}{} on {device:?}",
            source.kind,
            source.dir.display(),
            source
                .step
                .map(|s| format!(" (step {s})"))
                .unwrap_or_default()
        );
        Ok(Self {
            // Image-only evaluation (linear probe, k-NN) needs none; a text refuses with it.
            tokenizer: loaded.tokenizer().map_err(|e| e.to_string()),
            config: source.config(),
            loaded,
            precision,
            workers,
        })
    }

    pub(super) fn encoder(&self, batch_size: usize) -> Encoder<'_> {
        Encoder::with_text(
            &self.loaded.model,
            self.tokenizer.clone(),
            self.loaded.vs.device(),
            self.precision,
            batch_size,
        )
    }

    /// The report with the checkpoint it describes, as JSON.
    pub(super) fn write_json(
        &self,
        path: &Path,
        report: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        let mut v = serde_json::to_value(report)?;
        if let serde_json::Value::Object(map) = &mut v {
            map.insert(
                "checkpoint".into(),
                self.loaded.source.dir.display().to_string().into(),
            );
            map.insert("step".into(), self.loaded.source.step.into());
        }
        report::write_json(path, &v)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    }
}

fn zeroshot(a: ZeroShotArgs) -> anyhow::Result<()> {
    // The device and the files are checked before the model is loaded, so a typo fails fast.
    super::device_arg(&a.common.run.device)?;
    let mut task = ZeroShotTask::resolve(
        &a.data,
        &a.split,
        a.classnames.as_deref(),
        a.templates.as_deref(),
        a.classes_subset.as_deref(),
    )?;
    task.confusion_max_classes = a.confusion_max_classes;
    if task.is_multilabel() && a.plot.is_some() {
        bail!(
            "--plot draws a confusion matrix; a multilabel set ({}) has none",
            task.data
        );
    }
    let classes = task.classnames.len();
    if a.plot.is_some() && classes > a.confusion_max_classes {
        bail!(
            "--plot draws the full {classes} × {classes} confusion matrix, over the cap of \
             --confusion-max-classes {}; raise it to at least {classes} (the matrix takes \
             classes² × 8 bytes: {} MB) or leave out --plot (the report lists the most confused \
             pairs, --json every pair that occurred)",
            a.confusion_max_classes,
            (classes as u128).pow(2) * 8 / 1_000_000
        );
    }
    let s = Session::open(&a.common)?;
    let prep = eval_images(&s.config, a.common.run.batch_size, s.workers);
    if task.is_multilabel() {
        let r = task.run_multilabel(&s.encoder(a.common.run.batch_size), &prep)?;
        print!("{}", report::multilabel_markdown(&r));
        if let Some(path) = &a.common.json {
            s.write_json(path, &r)?;
        }
        return Ok(());
    }
    let r = task.run(&s.encoder(a.common.run.batch_size), &prep)?;
    print!("{}", report::zeroshot_markdown(&r));
    if let Some(path) = &a.common.json {
        s.write_json(path, &r)?;
        if r.metrics.confusion_matrix.is_none() {
            eprintln!(
                "{}: {} classes are over --confusion-max-classes {}, so the dense \
                 `confusion_matrix` is left out; `confusion` lists every pair that occurred",
                path.display(),
                r.metrics.classes,
                a.confusion_max_classes
            );
        }
    }
    if let Some(path) = &a.plot {
        let step = s.loaded.source.step;
        let title = format!(
            "{} classes, top-1 {:.1}%{}",
            r.metrics.classes,
            100.0 * r.metrics.top1,
            step.map(|n| format!(" (step {n})")).unwrap_or_default()
        );
        let matrix = r
            .metrics
            .dense_confusion(a.confusion_max_classes)
            .map_err(anyhow::Error::msg)?;
        cliptrain::plot::confusion_png(matrix, &task.classnames, &title, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn retrieval_cmd(a: RetrievalArgs) -> anyhow::Result<()> {
    let s = Session::open(&a.common)?;
    let prep = eval_images(&s.config, a.common.run.batch_size, s.workers);
    let r = retrieval::run(
        &a.data,
        &a.split,
        &s.encoder(a.common.run.batch_size),
        &prep,
    )?;
    print!("{}", report::retrieval_markdown(&r));
    if let Some(path) = &a.common.json {
        s.write_json(path, &r)?;
    }
    Ok(())
}

fn builtins() {
    println!("| name | class names | templates | source |");
    println!("|---|---:|---:|---|");
    for b in &prompts::BUILTINS {
        let count = |t: Option<&str>| t.map_or(0, |t| prompts::builtin_lines(t).len());
        println!(
            "| builtin:{} | {} | {} | {} |",
            b.name,
            count(b.classnames),
            count(b.templates),
            b.source
        );
    }
}

fn suite_cmd(a: SuiteArgs) -> anyhow::Result<()> {
    let suite = Suite::load(&a.suite)?;
    let mut cols = Vec::new();
    for ckpt in &a.checkpoint {
        let common = Common {
            checkpoint: ckpt.clone(),
            run: a.run.clone(),
            json: None,
        };
        let label = ckpt.display().to_string();
        // A model that does not load fails its column, not the suite.
        let col = match Session::open(&common) {
            Ok(s) => {
                let prep = eval_images(&s.config, a.run.batch_size, s.workers);
                SuiteColumn {
                    checkpoint: label,
                    step: s.loaded.source.step,
                    results: suite.run(&s.encoder(a.run.batch_size), &prep),
                }
            }
            Err(e) => {
                tracing::warn!("{e:#}");
                SuiteColumn {
                    checkpoint: label,
                    step: None,
                    results: suite
                        .tasks
                        .iter()
                        .map(|t| (t.name.clone(), Err(format!("{e:#}"))))
                        .collect(),
                }
            }
        };
        cols.push(col);
    }
    print!("{}", report::suite_markdown(&suite, &cols));
    if let Some(path) = &a.json {
        report::write_json(path, &report::suite_json(&suite, &cols))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.csv {
        write_text(path, &report::suite_csv(&suite, &cols))?;
        eprintln!("wrote {}", path.display());
    }
    failed_cells(&cols, suite.tasks.len())
}

/// The cells shown in a failed suite's error; the table lists every one.
const FAILED_CELLS_SHOWN: usize = 5;

/// An error when any cell (a task on a checkpoint) of `cols` failed: how many of all, and the
/// first few with why. Every cell ran and the table and files were written first; the exit
/// code still says the suite did not pass, so a script or CI job cannot take it for a result.
fn failed_cells(cols: &[SuiteColumn], tasks: usize) -> anyhow::Result<()> {
    let failed: Vec<String> = cols
        .iter()
        .flat_map(|c| {
            c.results.iter().filter_map(|(task, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{task} on {}: {e}", c.checkpoint))
            })
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = failed
        .iter()
        .take(FAILED_CELLS_SHOWN)
        .map(|s| s.as_str())
        .collect();
    let more = failed.len() - shown.len();
    bail!(
        "{} of {} suite cells (tasks × checkpoints) failed; the table above says which and why:\n  {}{}",
        failed.len(),
        cols.len() * tasks,
        shown.join("\n  "),
        if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
    )
}

/// `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

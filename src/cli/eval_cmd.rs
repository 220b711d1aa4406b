//! `cliptrain eval zeroshot|retrieval`: how good is this model (a checkpoint, or a pretrained
//! Hugging Face or OpenCLIP folder), in the numbers the field reports. Tables go to stdout, `--json` keeps everything.
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cliptrain::config::Config;
use cliptrain::config::Precision;
use cliptrain::eval::{Encoder, ZeroShotTask, eval_images, plot, report, retrieval};
use cliptrain::source::LoadedModel;
use cliptrain::text::TextTokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Zero-shot classification: class names × prompt templates → classifier; top-1/top-5,
    /// per-class recall, confusions, seen vs held-out label groups.
    Zeroshot(ZeroShotArgs),
    /// Image↔text retrieval Recall@1/5/10 over captioned shards.
    Retrieval(RetrievalArgs),
}

/// What every evaluation needs: the model and where to run it.
#[derive(Debug, Args)]
pub struct Common {
    /// The model: a checkpoint folder, a run folder (its `latest` checkpoint), a Hugging Face
    /// CLIP folder or an OpenCLIP folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
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
    /// Also write every figure as JSON here.
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub common: Common,
    /// Shards with `.cls` labels (brace expansion, `::` lists), or an ImageFolder `DIR/<class>/*`.
    #[arg(long)]
    pub data: String,
    /// One class name per line; line i is label i.
    #[arg(long)]
    pub classnames: PathBuf,
    /// One prompt template per line, `{}` where the class name goes; default: a built-in set.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Class names (one per line) reported as the "seen" group; the rest as "held-out".
    #[arg(long)]
    pub classes_subset: Option<PathBuf>,
    /// Draw the confusion matrix to this PNG.
    #[arg(long, value_name = "OUT.png")]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub common: Common,
    /// Captioned shards; several captions per image as numbered members (`KEY.0.txt`, ...) or
    /// a JSON list in `data.json_caption_field` of the checkpoint's config.
    #[arg(long)]
    pub data: String,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Zeroshot(a) => zeroshot(a),
        EvalCommand::Retrieval(a) => retrieval_cmd(a),
    }
}

struct Session {
    loaded: LoadedModel,
    tokenizer: Arc<TextTokenizer>,
    /// The checkpoint's config (its data settings), or the defaults for a pretrained folder.
    config: Config,
    precision: Precision,
    workers: usize,
}

impl Session {
    fn open(c: &Common) -> anyhow::Result<Self> {
        let workers = cliptrain::runtime::cpu_threads(c.threads, "--threads");
        if c.threads > 0 {
            tch::set_num_threads(workers as i32);
        }
        let device = super::device_arg(&c.device)?;
        let precision = match c.precision.as_deref() {
            None if device.is_cuda() => Precision::Bf16,
            None | Some("fp32") => Precision::Fp32,
            Some("bf16") => Precision::Bf16,
            Some(other) => bail!("--precision {other}: use fp32 or bf16"),
        };
        let loaded = LoadedModel::open(&c.checkpoint, device)
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
            tokenizer: loaded.tokenizer()?,
            config: source.config(),
            loaded,
            precision,
            workers,
        })
    }

    fn encoder(&self, batch_size: usize) -> Encoder<'_> {
        Encoder {
            model: &self.loaded.model,
            tokenizer: self.tokenizer.clone(),
            device: self.loaded.vs.device(),
            precision: self.precision,
            batch_size,
        }
    }

    /// The report with the checkpoint it describes, as JSON.
    fn write_json(&self, path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
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
    let s = Session::open(&a.common)?;
    let task = ZeroShotTask::from_files(
        &a.data,
        &a.classnames,
        a.templates.as_deref(),
        a.classes_subset.as_deref(),
    )?;
    let prep = eval_images(&s.config, a.common.batch_size, s.workers);
    let r = task.run(&s.encoder(a.common.batch_size), &prep)?;
    print!("{}", report::zeroshot_markdown(&r));
    if let Some(path) = &a.common.json {
        s.write_json(path, &r)?;
    }
    if let Some(path) = &a.plot {
        let step = s.loaded.source.step;
        let title = format!(
            "{} classes, top-1 {:.1}%{}",
            r.metrics.classes,
            100.0 * r.metrics.top1,
            step.map(|n| format!(" (step {n})")).unwrap_or_default()
        );
        plot::confusion_png(&r.metrics.confusion_matrix, &task.classnames, &title, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn retrieval_cmd(a: RetrievalArgs) -> anyhow::Result<()> {
    let s = Session::open(&a.common)?;
    let prep = eval_images(&s.config, a.common.batch_size, s.workers);
    let r = retrieval::run(&a.data, &s.encoder(a.common.batch_size), &prep)?;
    print!("{}", report::retrieval_markdown(&r));
    if let Some(path) = &a.common.json {
        s.write_json(path, &r)?;
    }
    Ok(())
}

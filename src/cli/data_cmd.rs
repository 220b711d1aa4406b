//! `cliptrain data ...`: produce datasets on disk.
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cliptrain::config::DataConfig;
use cliptrain::data::import::{self, ImportOptions};
use cliptrain::data::inspect::inspect;
use cliptrain::data::sample::SampleKeys;
use cliptrain::data::spec::parse_spec;
use cliptrain::data::synth::{self, SynthOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate the embedded synthetic dataset (drawn shapes with captions) as WebDataset
    /// shards, with a zero-shot eval split whose held-out classes never appear in training.
    Synth(SynthArgs),
    /// Pack your own images into img2dataset-style shards: a folder plus a caption list (CSV
    /// `file,caption` or JSONL), or an ImageFolder (`DIR/<class>/*`) as a labelled eval set.
    Build(BuildArgs),
    /// Read every sample of SPEC and report samples, member keys, bad samples by reason,
    /// caption lengths and image sizes, per shard.
    Inspect(InspectArgs),
    /// The CLIP score (cosine of the image and caption embeddings) of every sample of SPEC
    /// under a model, per shard as JSON Lines (and optionally the image embeddings); a rerun
    /// continues where a stopped one ended, and --part i/n splits the shards between processes.
    Score(super::score_cmd::ScoreArgs),
    /// Keep the samples of SPEC that pass the rules (a CLIP-score threshold or top fraction
    /// from a `data score` folder, caption words and script, image size), copied byte for
    /// byte into new shards, with stats.json and a histogram of the scores.
    Filter(super::score_cmd::FilterArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Folder the caption list's file names are relative to.
    #[arg(long, requires = "captions", conflicts_with = "image_folder")]
    pub images: Option<PathBuf>,
    /// CSV (`file,caption`, optional header) or JSONL (`{"file": .., "caption": ..}`).
    #[arg(long, requires = "images")]
    pub captions: Option<PathBuf>,
    /// An ImageFolder `DIR/<class>/*` to pack as an evaluation set with `.cls` labels.
    #[arg(long)]
    pub image_folder: Option<PathBuf>,
    /// Output folder for the shards, stats.json (and classnames.txt).
    #[arg(long)]
    pub out: PathBuf,
    /// Shard name prefix (default: "train" for captions, "eval" for an ImageFolder).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Samples per shard.
    #[arg(long, default_value_t = 10_000)]
    pub shard_size: usize,
    /// Downscale images whose longer side exceeds this (0 keeps sizes).
    #[arg(long, default_value_t = 0)]
    pub max_side: u32,
    /// Decode/encode threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Shard spec: brace ranges, `::`-joined lists, `pipe:` commands.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    pub spec: Option<String>,
    /// Inspect the training data of this run config instead: `data.train`, or each source of a
    /// `[[data.sources]]` mixture, with its `data.image_keys` and `data.text_key`.
    #[arg(long, conflicts_with_all = ["image_keys", "text_key"])]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Image member extensions, first present wins.
    #[arg(long, default_value_t = DataConfig::default().image_keys)]
    pub image_keys: String,
    /// Caption member extension.
    #[arg(long, default_value_t = DataConfig::default().text_key)]
    pub text_key: String,
    /// Decode threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (created; shards of an earlier run there are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Training samples.
    #[arg(long, default_value_t = SynthOptions::default().train)]
    pub train: usize,
    /// Zero-shot eval samples (every class in turn, held-out ones included).
    #[arg(long, default_value_t = SynthOptions::default().eval)]
    pub eval: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = SynthOptions::default().image_size)]
    pub image_size: u32,
    /// Same seed and options give byte-identical output.
    #[arg(long, default_value_t = SynthOptions::default().seed)]
    pub seed: u64,
    /// Samples per tar shard.
    #[arg(long, default_value_t = SynthOptions::default().shard_size)]
    pub shard_size: usize,
    /// `shapes` (circle, square, ...) or `symbols` (star, heart, hexagon, crescent, arrow,
    /// bar): a second domain with new shapes and new words, for fine-tuning.
    #[arg(long, value_enum, default_value = "shapes")]
    pub domain: synth::Domain,
    /// `shards` (WebDataset), or `folder`: images/ + captions.csv and an ImageFolder eval/,
    /// the way your own data arrives.
    #[arg(long, value_enum, default_value = "shards")]
    pub layout: synth::Layout,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Synth(args) => synth_cmd(args),
        DataCommand::Build(args) => build_cmd(args),
        DataCommand::Inspect(args) => inspect_cmd(args),
        DataCommand::Score(args) => super::score_cmd::run(args),
        DataCommand::Filter(args) => super::score_cmd::filter(args),
    }
}

fn build_cmd(args: BuildArgs) -> anyhow::Result<()> {
    let (rows, classes, prefix) = match (&args.images, &args.captions, &args.image_folder) {
        (Some(images), Some(captions), None) => {
            (import::read_caption_rows(images, captions)?, None, "train")
        }
        (None, None, Some(folder)) => {
            let (rows, classes) = import::read_image_folder(folder)?;
            (rows, Some(classes), "eval")
        }
        _ => bail!("give either --images DIR --captions FILE, or --image-folder DIR"),
    };
    let opts = ImportOptions {
        out: args.out.clone(),
        prefix: args.prefix.unwrap_or_else(|| prefix.into()),
        shard_size: args.shard_size,
        max_side: args.max_side,
        max_pixels: DataConfig::default().max_image_pixels,
        threads: cliptrain::runtime::cpu_threads(args.threads, "--threads"),
    };
    let start = Instant::now();
    // SIGINT/SIGTERM stop the build between rows, and it removes what it staged.
    let stop = super::signal::stop_token();
    let stats = import::import_until(&rows, classes.as_deref(), &opts, &|| stop.is_stopped())
        .with_context(|| format!("building shards in {}", args.out.display()))?;
    println!(
        "wrote {} of {} rows into {} shard(s) in {:.1} s; {} failed (listed in {})",
        stats.written,
        stats.rows,
        stats.shards.len(),
        start.elapsed().as_secs_f64(),
        stats.failed,
        args.out.join("stats.json").display()
    );
    if !stats.spec.is_empty() {
        println!("spec: {}", stats.spec);
    }
    if stats.written == 0 {
        bail!(
            "no row had a usable image; see {}",
            args.out.join("stats.json").display()
        );
    }
    Ok(())
}

fn inspect_cmd(args: InspectArgs) -> anyhow::Result<()> {
    let threads = cliptrain::runtime::cpu_threads(args.threads, "--threads");
    let (d, parts) = match (&args.config, args.spec) {
        (Some(path), _) => {
            let d = cliptrain::config::load(path, &[])?.data;
            let parts = data_parts(&d)
                .with_context(|| format!("{}: the [data] section", path.display()))?;
            (d, parts)
        }
        (None, spec) => {
            let d = DataConfig {
                image_keys: args.image_keys,
                text_key: args.text_key,
                ..DataConfig::default()
            };
            let spec = spec.expect("clap requires a spec without --config");
            (d, vec![(String::new(), 1.0, spec)])
        }
    };
    let weights: Vec<f64> = parts.iter().map(|(_, w, _)| *w).collect();
    let shares = cliptrain::data::mixture::shares(&weights).map_err(|(i, w)| {
        anyhow::anyhow!("data.sources[{i}].weight = {w} must be a finite number > 0")
    })?;
    let mut reports = Vec::with_capacity(parts.len());
    for ((name, weight, spec), share) in parts.iter().zip(&shares) {
        let report = inspect(
            &parse_spec(spec)?,
            &SampleKeys::from_config(&d),
            d.max_image_pixels,
            threads,
        );
        if parts.len() > 1 && !args.json {
            println!(
                "source {name:?} ({spec}), weight {weight} = {:.1}% of the samples:",
                100.0 * share
            );
        }
        if !args.json {
            print!("{report}");
        }
        reports.push(report);
    }
    if args.json {
        let value = if parts.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            let sources: Vec<_> = parts
                .iter()
                .zip(&reports)
                .map(|((name, weight, spec), r)| {
                    serde_json::json!({"name": name, "weight": weight, "train": spec, "report": r})
                })
                .collect();
            serde_json::json!({ "sources": sources })
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    for ((_, _, spec), report) in parts.iter().zip(&reports) {
        if report.samples_ok == 0 {
            // As `train` refuses such data: scripts can tell from the exit code.
            anyhow::bail!(
                "no usable sample in {spec} ({} found, skipped: {})",
                report.samples,
                report.skipped
            );
        }
    }
    Ok(())
}

/// The (name, weight, shard spec) of each source a config's `[data]` trains on: `data.train`
/// alone, or every `[[data.sources]]` entry.
pub fn data_parts(d: &DataConfig) -> anyhow::Result<Vec<(String, f64, String)>> {
    if !d.sources.is_empty() {
        return Ok(d
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.weight, s.train.clone()))
            .collect());
    }
    if d.train.is_empty() {
        bail!("data.train is empty and there is no [[data.sources]] entry");
    }
    Ok(vec![(String::new(), 1.0, d.train.clone())])
}

fn synth_cmd(args: SynthArgs) -> anyhow::Result<()> {
    let opts = SynthOptions {
        out: args.out,
        train: args.train,
        eval: args.eval,
        image_size: args.image_size,
        seed: args.seed,
        shard_size: args.shard_size,
        domain: args.domain,
        layout: args.layout,
    };
    let start = Instant::now();
    let summary = synth::generate(&opts)
        .with_context(|| format!("generating the synthetic dataset in {}", opts.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let total = summary.train.samples + summary.eval.samples;
    let stored = |s: &synth::SplitSummary| match opts.layout {
        synth::Layout::Shards => format!("in {} shards", s.shards.len()),
        synth::Layout::Folder => format!("in {}", s.spec),
    };
    println!(
        "wrote {} train samples ({} with two objects) {} and {} eval samples {}",
        summary.train.samples,
        summary.train.two_object,
        stored(&summary.train),
        summary.eval.samples,
        stored(&summary.eval),
    );
    if opts.layout == synth::Layout::Folder {
        println!(
            "training captions: {} (pack with `cliptrain data build --images {} --captions {} --out DIR`)",
            opts.out.join("captions.csv").display(),
            summary.train.spec,
            opts.out.join("captions.csv").display()
        );
    }
    println!(
        "classes: {} ({} held out of training: {})",
        summary.classes.len(),
        summary.heldout.len(),
        summary.heldout.join(", ")
    );
    println!("train: {}", summary.train.spec);
    println!("eval:  {}", summary.eval.spec);
    println!(
        "took {secs:.1} s ({:.0} samples/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

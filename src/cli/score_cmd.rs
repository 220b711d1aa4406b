//! `cliptrain data score` (CLIP scores of a shard set, see [`cliptrain::score`]) and `cliptrain
//! data filter` (a set cut down by those scores and other rules, see
//! [`cliptrain::data::filter`]).
use anyhow::{Context, bail};
use clap::Args;
use cliptrain::interop::LoadedModel;
use cliptrain::score::{Part, score_shards};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Shard spec: brace ranges, `::`-joined lists, `pipe:` commands.
    pub spec: String,
    /// The model: a checkpoint or run folder, a Hugging Face or OpenCLIP folder (or one weights
    /// file in it), or hf:ORG/NAME[@REVISION].
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The folder to write: score.json and, per shard, NNNNNN.jsonl (+ NNNNNN.safetensors).
    /// Shards already complete there are not scored again.
    #[arg(long)]
    pub out: PathBuf,
    /// Score only the shards whose place in the spec is i modulo n (`0/4` .. `3/4` for four
    /// processes into the same --out).
    #[arg(long, default_value = "0/1", value_parser = Part::parse)]
    pub part: Part,
    /// Also keep each sample's image embedding (NNNNNN.safetensors, the format `embed` writes).
    #[arg(long)]
    pub embeddings: bool,
    /// Samples encoded at once; at least 1.
    #[arg(long, default_value_t = 256, value_parser = super::batch_size_arg)]
    pub batch_size: usize,
    /// "auto", "cpu", "cuda" or "cuda:N" (bf16 autocast on CUDA).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Score with a checkpoint's moving average of the weights (`ema.safetensors`).
    #[arg(long)]
    pub ema: bool,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let device = super::device_arg(&args.device)?;
    let loaded = LoadedModel::open_weights(&args.checkpoint, device, args.ema)
        .with_context(|| format!("loading model {}", args.checkpoint.display()))?;
    let s = score_shards(
        &loaded,
        &args.spec,
        &args.out,
        args.part,
        args.embeddings,
        args.batch_size,
    )?;
    if s.shards_scored == 0 && s.shards_done_before == 0 {
        bail!(
            "{}: --part {}/{} gives this process no shard: the spec has {} (use at most {} parts)",
            args.spec,
            args.part.index,
            args.part.count,
            s.shards_in_spec,
            s.shards_in_spec
        );
    }
    if s.shards_scored > 0 && s.samples == 0 {
        bail!(
            "{}: no usable sample (an image and a caption) in the shards scored (skipped: {})",
            args.spec,
            s.skipped
        );
    }
    println!(
        "scored {} samples in {} shard(s) into {}{}",
        s.samples,
        s.shards_scored,
        args.out.display(),
        match s.shards_done_before {
            0 => String::new(),
            n => format!("; {n} shard(s) were complete already"),
        }
    );
    if s.skipped.total() > 0 {
        eprintln!("skipped samples: {}", s.skipped);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Shard spec: brace ranges, `::`-joined lists, `pipe:` commands.
    pub spec: String,
    /// The folder to write the kept shards, stats.json and scores.png into (created).
    #[arg(long)]
    pub out: PathBuf,
    /// A `data score` folder of the same spec (needed by --min-score and --keep-fraction).
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Keep samples whose CLIP score is at least this.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Keep the best-scoring fraction of the samples, in (0, 1] (DataComp's rule).
    #[arg(long)]
    pub keep_fraction: Option<f64>,
    /// Keep captions of at least this many words.
    #[arg(long, default_value_t = 0)]
    pub min_words: usize,
    /// Keep captions whose letters are at least this fraction ASCII, in [0, 1].
    #[arg(long)]
    pub min_ascii_letters: Option<f64>,
    /// Keep images whose shorter side has at least this many pixels.
    #[arg(long, default_value_t = 0)]
    pub min_side: u32,
    /// Samples per output shard.
    #[arg(long, default_value_t = 10_000)]
    pub shard_size: usize,
    /// Output shard name prefix.
    #[arg(long, default_value = "train")]
    pub prefix: String,
    /// Image member extensions, first present wins.
    #[arg(long, default_value_t = cliptrain::config::DataConfig::default().image_keys)]
    pub image_keys: String,
    /// Caption member extension.
    #[arg(long, default_value_t = cliptrain::config::DataConfig::default().text_key)]
    pub text_key: String,
}

pub fn filter(args: FilterArgs) -> anyhow::Result<()> {
    use cliptrain::data::filter::{FilterRules, filter, read_scores};
    if let Some(f) = args.min_ascii_letters.filter(|f| !(0.0..=1.0).contains(f)) {
        bail!("--min-ascii-letters {f} must be in [0, 1]");
    }
    if std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty: filter writes a new set; choose an empty or new --out",
            args.out.display()
        );
    }
    let scores = match &args.scores {
        Some(dir) => Some(read_scores(dir)?),
        None => None,
    };
    let rules = FilterRules {
        min_score: args.min_score,
        keep_fraction: args.keep_fraction,
        min_words: args.min_words,
        min_ascii_letters: args.min_ascii_letters,
        min_side: args.min_side,
    };
    let d = cliptrain::config::DataConfig {
        image_keys: args.image_keys.clone(),
        text_key: args.text_key.clone(),
        ..Default::default()
    };
    let keys = cliptrain::data::sample::SampleKeys::from_config(&d);
    let shards = cliptrain::data::spec::parse_spec(&args.spec)?;
    let stats = filter(
        shards,
        &keys,
        scores.as_ref(),
        &rules,
        &args.out,
        (&args.prefix, args.shard_size),
    )?;
    let stats_path = args.out.join("stats.json");
    std::fs::write(&stats_path, serde_json::to_string_pretty(&stats)? + "\n")
        .with_context(|| format!("writing {}", stats_path.display()))?;
    if !stats.scores.is_empty() {
        let png = args.out.join("scores.png");
        cliptrain::plot::histogram_png(&stats.scores, stats.threshold, "CLIP scores", &png)?;
    }
    println!(
        "kept {} of {} samples in {} shard(s) into {}",
        stats.kept,
        stats.seen,
        stats.shards.len(),
        args.out.display()
    );
    for (reason, n) in &stats.dropped {
        println!(
            "  dropped {n}: {}",
            serde_json::to_value(reason)?.as_str().unwrap_or("?")
        );
    }
    if stats.seen == 0 {
        bail!("{}: no samples in the shards", args.spec);
    }
    Ok(())
}

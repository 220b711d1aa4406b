//! `cliptrain data score`: CLIP scores of a shard set (see [`cliptrain::score`]).
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

//! `cliptrain data ...`: produce datasets on disk.
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::data::synth::{self, SynthOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate the embedded synthetic dataset (drawn shapes with captions) as WebDataset
    /// shards, with a zero-shot eval split whose held-out classes never appear in training.
    Synth(SynthArgs),
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
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Synth(args) => synth_cmd(args),
    }
}

fn synth_cmd(args: SynthArgs) -> anyhow::Result<()> {
    let opts = SynthOptions {
        out: args.out,
        train: args.train,
        eval: args.eval,
        image_size: args.image_size,
        seed: args.seed,
        shard_size: args.shard_size,
    };
    let start = Instant::now();
    let summary = synth::generate(&opts)
        .with_context(|| format!("generating the synthetic dataset in {}", opts.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let total = summary.train.samples + summary.eval.samples;
    println!(
        "wrote {} train samples ({} with two objects) in {} shards and {} eval samples in {} shards to {}",
        summary.train.samples,
        summary.train.two_object,
        summary.train.shards.len(),
        summary.eval.samples,
        summary.eval.shards.len(),
        opts.out.display()
    );
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

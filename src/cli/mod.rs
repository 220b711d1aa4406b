//! Subcommands. Each lives in its own file and is a plain function over parsed arguments.
mod bench_cmd;
mod config_cmd;
mod data_cmd;
mod download_cmd;
mod embed_cmd;
mod env_cmd;
mod eval_cmd;
mod export_cmd;
mod launch_cmd;
mod merge_cmd;
mod plot_cmd;
mod probe_cmd;
mod score_cmd;
mod signal;
mod tokenizer_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;

/// Train, fine-tune and evaluate CLIP-style image-text models.
#[derive(Debug, Parser)]
#[command(name = "cliptrain", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (repeat for debug/trace). CLIPTRAIN_LOG=filter overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure throughput (images/s of the data path, ms per optimizer step).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Inspect and validate configuration files.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Make, pack and inspect WebDataset shards.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Fetch a model from the Hugging Face Hub into its cache (for offline use) and print
    /// the folder.
    Download(download_cmd::DownloadArgs),
    /// Encode images (shards) or texts with a checkpoint into an embedding index.
    Embed(embed_cmd::EmbedArgs),
    /// Write a checkpoint as a Hugging Face or OpenCLIP folder.
    #[command(subcommand)]
    Export(export_cmd::ExportCommand),
    /// Search an embedding index with a text query.
    Search(embed_cmd::SearchArgs),
    /// Evaluate a checkpoint: zero-shot classification or image-text retrieval.
    #[command(subcommand)]
    Eval(eval_cmd::EvalCommand),
    /// Show the libtorch build, CUDA/cuDNN availability, devices and threads.
    Env(env_cmd::EnvArgs),
    /// Run a command as several ranks of a multi-process job (like torchrun).
    Launch(launch_cmd::LaunchArgs),
    /// WiSE-FT: interpolate two models of one architecture, (1 − α)·A + α·B, into Hugging Face
    /// or OpenCLIP folders (one per α of a sweep).
    Merge(merge_cmd::MergeArgs),
    /// Draw runs' loss, learning rate, temperature and evaluation curves into one PNG.
    Plot(plot_cmd::PlotArgs),
    /// Train a CLIP model from a TOML config (with exact resume).
    Train(train_cmd::TrainArgs),
    /// Train a BPE tokenizer on captions, or show how text encodes.
    #[command(subcommand)]
    Tokenizer(tokenizer_cmd::TokenizerCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(cmd) => bench_cmd::run(cmd),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Download(args) => download_cmd::run(args),
        Command::Embed(args) => embed_cmd::embed(args),
        Command::Env(args) => env_cmd::run(args),
        Command::Export(cmd) => export_cmd::run(cmd),
        Command::Search(args) => embed_cmd::search(args),
        Command::Eval(cmd) => eval_cmd::run(cmd),
        Command::Launch(args) => launch_cmd::run(args),
        Command::Merge(args) => merge_cmd::run(args),
        Command::Plot(args) => plot_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Tokenizer(cmd) => tokenizer_cmd::run(cmd),
    }
}

/// Logs go to stderr so stdout stays machine-readable (`config check`, `--json`).
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLIPTRAIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: a log file (CI, nohup, `2> log.txt`) gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// `--device`: parsed and checked against the devices this host has, so a missing GPU is a
/// one-line error at start-up instead of a libtorch panic at the first tensor.
fn device_arg(spec: &str) -> anyhow::Result<tch::Device> {
    let d: cliptrain::config::DeviceSpec = spec
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--device {spec}: {e}"))?;
    cliptrain::runtime::device(d).map_err(|e| anyhow::anyhow!("--device {e}"))
}

/// `--batch-size`: at least 1.
fn batch_size_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("the batch size is 0; it must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

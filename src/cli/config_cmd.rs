//! `cliptrain config ...`: validate a config and show what a run would actually use.
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::config;
use cliptrain::train::RunPlan;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE (with its `extends` chain and overrides) as `cliptrain train` would before its
    /// first step — device, ranks, `model.init_from`, tokenizer, shards, `[eval]` sets, memory,
    /// run folder and resume — reporting every problem, then print the effective config, every
    /// default filled in, as TOML on stdout. Allocates no model and reads no sample.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    pub file: PathBuf,
    /// Override a field: `--set section.key=value` (repeatable), e.g. `--set optim.lr=1e-3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Check the run as `cliptrain train --resume` would continue it: `auto` or a checkpoint.
    #[arg(long, value_name = "auto|PATH")]
    pub resume: Option<String>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let file = args.file.display();
    let cfg = config::load(&args.file, &args.overrides)
        .with_context(|| format!("{file} is not a valid config"))?;
    let resume = super::train_cmd::resume_from_arg(args.resume.as_deref());
    let plan = RunPlan::new(&cfg, &resume)
        .with_context(|| format!("{file}: `cliptrain train` would refuse to start"))?;
    for line in plan.describe() {
        tracing::info!("{line}");
    }
    print!("{}", plan.cfg.to_toml());
    tracing::info!("{file} is valid");
    Ok(())
}

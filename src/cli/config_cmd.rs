//! `cliptrain config ...`: validate a config and show what a run would actually use.
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::config;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE (with its `extends` chain and overrides) and print the effective config,
    /// every default filled in, as TOML on stdout. With `model.init_from`, the source's model
    /// dimensions (and tokenizer, normalisation) are applied as training would, each one logged.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    pub file: PathBuf,
    /// Override a field: `--set section.key=value` (repeatable), e.g. `--set optim.lr=1e-3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let cfg = config::load(&args.file, &args.overrides)
        .with_context(|| format!("{} is not a valid config", args.file.display()))?;
    let (cfg, _) = cliptrain::source::prepare(&cfg)
        .with_context(|| format!("{}: model.init_from", args.file.display()))?;
    let missing = missing_files(&cfg);
    if !missing.is_empty() {
        anyhow::bail!(
            "{} names files that do not exist:\n  {}",
            args.file.display(),
            missing.join("\n  ")
        );
    }
    if !cfg.data.tokenizer.is_empty() {
        // Its specials must resolve under the data.*_token keys, as training will load it.
        let opts = cfg.data.tokenizer_options(cfg.model.text.context_length);
        cliptrain::text::TextTokenizer::load(&cfg.data.tokenizer, &opts)
            .with_context(|| format!("{}: data.tokenizer", args.file.display()))?;
    }
    print!("{}", cfg.to_toml());
    tracing::info!("{} is valid", args.file.display());
    Ok(())
}

/// The files a config names that are not there (shard specs are checked when read: they may be
/// `pipe:` commands or patterns).
fn missing_files(cfg: &config::Config) -> Vec<String> {
    [
        ("data.tokenizer", &cfg.data.tokenizer),
        ("eval.classnames", &cfg.eval.classnames),
        ("eval.templates", &cfg.eval.templates),
        ("eval.classes_subset", &cfg.eval.classes_subset),
        ("eval.suite", &cfg.eval.suite),
    ]
    .into_iter()
    .filter(|(_, path)| {
        !path.is_empty()
            && !path.starts_with(cliptrain::eval::prompts::BUILTIN_PREFIX)
            && !std::path::Path::new(path).is_file()
    })
    .map(|(key, path)| format!("{key} = {path:?}: no such file"))
    .collect()
}

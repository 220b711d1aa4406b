//! `cliptrain train`: a run from a TOML config, with exact resume.
use anyhow::Context;
use clap::Args;
use cliptrain::config;
use cliptrain::train::{self, Resume, TrainOptions};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run's TOML config.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a field: `--set section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// `auto` continues from the run's newest checkpoint (or starts fresh if it has none);
    /// a path continues from that checkpoint or run folder.
    #[arg(long, value_name = "auto|PATH")]
    pub resume: Option<String>,
    /// Stop after this step with a checkpoint, as a preempted job would; the LR schedule still
    /// spans optim.steps.
    #[arg(long, value_name = "K")]
    pub stop_at_step: Option<u64>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // Ctrl-C or a scheduler's SIGTERM, from now on: finish the step (or the start-up),
    // checkpoint what was trained, exit cleanly.
    let stop = super::signal::stop_token();
    let cfg = config::load(&args.config, &args.overrides)
        .with_context(|| format!("{} is not a valid config", args.config.display()))?;
    let resume = resume_from_arg(args.resume.as_deref());
    let info = cliptrain::runtime::RuntimeInfo::gather();
    tracing::info!(
        "libtorch {}, run folder {}",
        info.libtorch_version,
        cfg.run.output_dir.join(&cfg.run.name).display()
    );
    let s = train::train(
        &cfg,
        &TrainOptions {
            resume,
            stop_at_step: args.stop_at_step,
            stop,
        },
    )?;
    if std::env::var("RANK").is_ok_and(|r| r.trim() != "0") {
        // One summary per job: rank 0's (the others neither log nor checkpoint).
        return Ok(());
    }
    let first = s.losses.first().map(|x| x.1).unwrap_or(f64::NAN);
    let last = s.losses.last().map(|x| x.1).unwrap_or(f64::NAN);
    let min = s.losses.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    println!(
        "steps {}..{} of {}",
        s.first_step, s.last_step, cfg.optim.steps
    );
    println!(
        "loss: first {first:.4}, last {last:.4}, min {min:.4} (chance level ln(batch) = {:.4})",
        (cfg.optim.batch_size as f64).ln()
    );
    println!(
        "throughput: {:.1} samples/s, {:.1}% of the time waiting for data",
        s.samples_per_s,
        100.0 * s.data_wait_fraction
    );
    println!("skipped samples: {}", s.skipped_samples);
    if let Some(c) = &s.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    println!(
        "metrics: {}/metrics.jsonl, TensorBoard: tensorboard --logdir {}/tb",
        s.run_dir.display(),
        s.run_dir.display()
    );
    if let Some((step, r)) = &s.eval {
        println!("\nevaluation at step {step}:");
        if let Some(z) = &r.zeroshot {
            print!("{}", cliptrain::eval::report::zeroshot_markdown(z));
        }
        if let Some(x) = &r.retrieval {
            print!("{}", cliptrain::eval::report::retrieval_markdown(x));
        }
        if let Some((suite, results)) = &r.suite {
            let col = cliptrain::eval::report::SuiteColumn {
                checkpoint: "this run".into(),
                step: Some(*step),
                results: results.clone(),
            };
            print!("{}", cliptrain::eval::report::suite_markdown(suite, &[col]));
        }
    }
    if s.interrupted || s.last_step < cfg.optim.steps {
        println!(
            "stopped at step {}; continue with: {}",
            s.last_step,
            resume_command(&args, &s)
        );
    }
    Ok(())
}

/// `--resume`: none, `auto`, or a checkpoint or run folder.
pub(super) fn resume_from_arg(arg: Option<&str>) -> Resume {
    match arg {
        None => Resume::No,
        Some("auto") => Resume::Auto,
        Some(p) => Resume::From(PathBuf::from(p)),
    }
}

/// The command that continues this run: the same config and every `--set`, with `--resume
/// auto` (or the `--resume` given, when this run saved nothing of its own), quoted for a shell.
fn resume_command(args: &TrainArgs, s: &train::TrainSummary) -> String {
    let mut words = vec![
        "cliptrain".to_string(),
        "train".into(),
        "--config".into(),
        args.config.display().to_string(),
    ];
    for o in &args.overrides {
        words.extend(["--set".to_string(), o.clone()]);
    }
    let saved = s.checkpoint.is_some() || s.last_step > s.first_step;
    let resume = match &args.resume {
        Some(r) if !saved => r.clone(),
        _ => "auto".into(),
    };
    words.extend(["--resume".to_string(), resume]);
    words
        .iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `w` as one shell word: as it is when it has no special characters, else single-quoted.
fn shell_word(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-+=:,./@%".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

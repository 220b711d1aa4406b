//! `cliptrain plot RUN... --out curves.png`: training and evaluation curves of one or more runs
//! as one PNG (see [`cliptrain::plot`]).
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folders (or `metrics.jsonl` files); several are drawn in the same panels, one colour
    /// each.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Draw this metric (repeatable), as named in metrics.jsonl (`grad_norm`, `eval/zeroshot_top1`);
    /// default: loss, lr, temperature and every evaluation metric (at most 30 panels in all).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|r| cliptrain::plot::read_run(r))
        .collect::<Result<Vec<_>, _>>()?;
    let left_out = cliptrain::plot::curves_png(&runs, &args.metrics, &args.out)?;
    if !left_out.is_empty() {
        tracing::warn!("{}", left_out_note(&left_out));
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Names the metrics that got no panel: every one up to a screenful, then a count.
fn left_out_note(left_out: &[String]) -> String {
    const NAMED: usize = 100;
    let mut names = left_out[..left_out.len().min(NAMED)].join(", ");
    if left_out.len() > NAMED {
        names += &format!(" and {} more", left_out.len() - NAMED);
    }
    format!(
        "{} metric(s) not drawn: at most {} panels, the most often and most recently logged; \
         draw others with --metric NAME. Not drawn: {names}",
        left_out.len(),
        cliptrain::plot::MAX_PANELS
    )
}

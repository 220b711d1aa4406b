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
    /// default: loss, lr, temperature and every evaluation metric.
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|r| cliptrain::plot::read_run(r))
        .collect::<Result<Vec<_>, _>>()?;
    cliptrain::plot::curves_png(&runs, &args.metrics, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

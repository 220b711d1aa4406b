//! Pictures of runs: `cliptrain plot RUN... --out curves.png` draws the loss, learning rate,
//! temperature and every evaluation metric against the step, from each run's `metrics.jsonl`,
//! one panel per metric and one colour per run. PNG only, drawn pixel by pixel with an embedded
//! font ([`canvas`]), so it works on a headless node with no fonts and no Python. `eval
//! zeroshot --plot` draws its confusion matrix the same way ([`confusion_png`]).
pub mod canvas;
mod chart;
mod confusion;
pub mod curves;

pub use confusion::confusion_png;
pub use curves::{RunCurves, read_run};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: {source} (a run folder holds metrics.jsonl, written by `cliptrain train`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Nothing(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: image::ImageError,
    },
}

/// The metrics drawn when none are named: these train metrics and every evaluation metric.
pub const DEFAULT_TRAIN_METRICS: &[&str] = &["loss", "lr", "temperature"];

/// Draws `runs` into one PNG at `path`: a panel per metric (`metrics` names them as in
/// `metrics.jsonl`, `eval/NAME` or `train/NAME` where a name is in both; empty = the defaults).
pub fn curves_png(runs: &[RunCurves], metrics: &[String], path: &Path) -> Result<(), PlotError> {
    let panels = curves::panels(runs, metrics)?;
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let img = chart::draw(&panels, &names);
    img.save(path).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

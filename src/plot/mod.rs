//! Pictures of runs: `cliptrain plot RUN... --out curves.png` draws the loss, learning rate,
//! temperature and every evaluation metric against the step, from each run's `metrics.jsonl`,
//! one panel per metric and one colour per run. PNG only, drawn pixel by pixel with an embedded
//! font ([`canvas`]), so it works on a headless node with no fonts and no Python. `eval
//! zeroshot --plot` draws its confusion matrix the same way ([`confusion_png`]).
pub mod canvas;
mod chart;
mod confusion;
pub mod curves;
mod histogram;

pub use confusion::confusion_png;
pub use curves::{MAX_PANELS, RunCurves, read_run};
pub use histogram::histogram_png;

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
/// `metrics.jsonl`, `eval/NAME` or `train/NAME` where a name is in both; empty = the defaults),
/// at most [`MAX_PANELS`]. Returns the titles of the metrics left out for that bound (the
/// picture says how many; the caller names them).
pub fn curves_png(
    runs: &[RunCurves],
    metrics: &[String],
    path: &Path,
) -> Result<Vec<String>, PlotError> {
    let selection = curves::panels(runs, metrics)?;
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let note = (!selection.left_out.is_empty()).then(|| {
        format!(
            "{} more metric(s) not drawn (at most {MAX_PANELS} panels): the warning of `cliptrain plot` \
             names them; choose with --metric",
            selection.left_out.len()
        )
    });
    let img = chart::draw(&selection.panels, &names, note.as_deref());
    img.save(path).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(selection.left_out)
}

//! Why a run could not start or had to stop.
use super::resume::KeyChange;
use super::step::StepError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting the run cannot start with, named with its fix.
    #[error("{0}")]
    Setup(String),
    /// Several of the above at once (see [`super::RunPlan`]).
    #[error(transparent)]
    Refused(#[from] super::plan::Refusals),
    #[error("loading data.tokenizer = {path}: {source}")]
    Tokenizer {
        path: String,
        source: crate::text::TextError,
    },
    /// (Its message holds the eval error's; no `#[source]`, or it would print twice.)
    #[error("preparing the [eval] sets: {0}")]
    Eval(crate::eval::EvalError),
    #[error("opening the metrics log in {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading {}: {source}", path.display())]
    Weights {
        path: PathBuf,
        source: crate::model::ModelError,
    },
    #[error("{}: {source}", path.display())]
    Ema {
        path: PathBuf,
        source: crate::optim::EmaError,
    },
    #[error("loading {}: {source}", path.display())]
    OptimizerState {
        path: PathBuf,
        source: crate::optim::OptimError,
    },
    #[error(
        "{} was trained with a different config; to resume, these keys must be as they were:\n{}\n\
         Keys that may change on resume: {} (configs/README.md, \"Resuming a run\")",
        dir.display(),
        changes.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"),
        super::resume::MAY_CHANGE_ON_RESUME.join(", ")
    )]
    ConfigChanged {
        dir: PathBuf,
        changes: Vec<KeyChange>,
    },
    #[error(
        "data.tokenizer = {} is not the tokenizer {} was trained with ({}); resume with that one",
        path.display(), dir.display(), dir.join("tokenizer.json").display()
    )]
    TokenizerChanged { path: PathBuf, dir: PathBuf },
    #[error(
        "{in_a_row} non-finite losses in a row (optim.max_bad_steps = {max}); stopping. The last \
         good checkpoint in {} is intact; lower optim.lr or set optim.grad_clip_norm before \
         resuming",
        run_dir.display()
    )]
    NonFinite {
        in_a_row: u32,
        max: u32,
        run_dir: PathBuf,
    },
    #[error("the training stream ended")]
    StreamEnded,
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Precision(#[from] crate::precision::PrecisionError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Source(#[from] crate::interop::SourceError),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

impl From<crate::eval::EvalError> for TrainError {
    fn from(e: crate::eval::EvalError) -> Self {
        Self::Eval(e)
    }
}

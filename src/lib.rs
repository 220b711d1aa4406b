//! Train, fine-tune and evaluate CLIP-style image–text models on libtorch.
//!
//! cliptrain is a command-line tool first (`cliptrain train --config run.toml`); this library
//! is what the binary runs, and the items re-exported here are its surface for Rust code:
//!
//! - **Configs**: a [`Config`] is one run, loaded from TOML with [`Config::load`] (its
//!   `extends` chain and `--set`-style overrides) or built in code from [`Config::default`].
//! - **Training**: [`train`] runs a config to the end (or to [`TrainOptions::stop_at_step`], or
//!   until its [`StopToken`] is set) with checkpoints, exact resume and ranks;
//!   [`RunPlan::new`] is its preflight alone — every start-up refusal, nothing allocated.
//! - **Models**: [`LoadedModel::open`] opens any model folder — a cliptrain checkpoint or run
//!   folder, a Hugging Face `CLIPModel`/`SiglipModel` folder or an OpenCLIP folder — as a
//!   [`ClipModel`] on a device, with its tokenizer ([`TextTokenizer`]) and preprocessing.
//! - **Embedding and evaluation**: an [`Encoder`] embeds images and texts;
//!   [`ZeroShotTask`] classifies with class names and prompt templates, [`retrieval`] ranks
//!   images and captions both ways.
//!
//! # Train from code
//!
//! ```no_run
//! use cliptrain::{Config, TrainOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A config file with two overrides, as `cliptrain train --config ... --set ...` reads it.
//! let mut cfg = Config::load("configs/demo.toml", &["optim.steps=20".into()])?;
//! cfg.run.name = "from-code".into();
//! let summary = cliptrain::train(&cfg, &TrainOptions::default())?;
//! println!("loss {:?} after step {}", summary.losses.last(), summary.last_step);
//! # Ok(())
//! # }
//! ```
//!
//! # Zero-shot classification from code
//!
//! ```no_run
//! use cliptrain::{LoadedModel, ZeroShotTask};
//! use std::path::Path;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = LoadedModel::open(Path::new("runs/demo/latest"), tch::Device::Cpu)?;
//! // Labelled shards (`.cls` members), their class names and prompt templates.
//! let task = ZeroShotTask::resolve(
//!     "data/synth/eval-000000.tar",
//!     "test",
//!     Some("data/synth/classnames.txt"),
//!     Some("data/synth/templates.txt"),
//!     None,
//! )?;
//! let report = task.run(&model.encoder(None, 64)?, &model.eval_images(64, 2))?;
//! println!("top-1 {:.3} over {} classes", report.metrics.top1, report.metrics.classes);
//! # Ok(())
//! # }
//! ```
//!
//! `examples/train_from_code.rs` and `examples/zeroshot_from_code.rs` are the same two programs
//! in full; the test suite builds and runs both on generated data.
//!
//! # The modules
//!
//! One module per concern (`config`, `data`, `text`, `model`, `loss`, `optim`, `train`,
//! `checkpoint`, `eval`, `dist`, and the model folders in `interop`; docs/architecture.md has
//! the map). They are public because the binary and the test suite are built on them, but they
//! are not part of this surface and may change between versions; they are hidden from these
//! docs.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod checkpoint;
#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod data;
#[doc(hidden)]
pub mod dist;
#[doc(hidden)]
pub mod embed;
#[doc(hidden)]
pub mod eval;
#[doc(hidden)]
pub mod hub;
#[doc(hidden)]
pub mod log;
#[doc(hidden)]
pub mod loss;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod optim;
#[doc(hidden)]
pub mod plot;
#[doc(hidden)]
pub mod precision;
#[doc(hidden)]
pub mod runtime;
#[doc(hidden)]
pub mod score;
// The C++ shim's FFI: only the library calls it.
#[doc(hidden)]
pub mod interop;
mod shim;
#[doc(hidden)]
pub mod text;
#[doc(hidden)]
pub mod train;

pub use config::{Config, ConfigError, DeviceSpec, Precision};
pub use eval::retrieval::{self, RetrievalReport};
pub use eval::zeroshot::{ZeroShotReport, ZeroShotTask};
pub use eval::{Encoder, EvalError, EvalImages};
pub use interop::{LoadedModel, ModelSource, SourceError};
pub use model::{ClipModel, ModelSpec};
pub use text::TextTokenizer;
pub use train::{
    Refusals, Resume, RunPlan, StopToken, TrainError, TrainOptions, TrainSummary, Trainer, train,
};

//! cliptrain: train, fine-tune and evaluate CLIP-style image-text models on libtorch.
//!
//! The binary (`src/main.rs`) is a thin command line over this library; each concern lives in
//! its own module.
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod embed;
pub mod eval;
pub mod finetune;
pub mod hub;
pub mod log;
pub mod loss;
pub mod model;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod runtime;
pub mod shim;
pub mod source;
pub mod text;
pub mod train;

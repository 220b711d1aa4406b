//! The integration tests, as one test binary (one link against libtorch instead of one per
//! file). Each module is one topic (most were a `tests/*.rs` file each); `common` holds what they
//! share: the one tiny config (`common::tiny`), the stand-in Hub, a CLIP_benchmark tree.
//!
//! The tests of all modules run as threads of this one process: process-wide state is shared.
//! libtorch's global RNG is the one that matters — a test that seeds it (directly, or through
//! `train::train` / `linear_probe`) or draws from it (`randn`, a model's init, dropout) holds
//! `common::rng_lock()` for as long as it does. Tests that run the `cliptrain` binary are
//! separate processes and share nothing.
mod common;

mod augment;
mod cli;
mod config;
mod data_stream;
mod data_synth;
mod data_tools;
mod dist;
mod docs;
mod ema;
mod embed_search;
mod eval;
mod eval_benchmark;
mod examples;
mod finetune;
mod finetune_example;
mod flyp;
mod gpu_check;
mod hardening;
mod hardening_cache;
mod hardening_evalcrash;
mod hardening_export;
mod hardening_state;
mod hub;
mod hub_hostile;
mod interop;
mod layering;
mod lora;
mod merge;
mod model_parity;
mod preflight;
mod preprocess;
mod pretrained;
mod probe;
mod reference_parity;
mod runs;
mod score;
mod sentencepiece;
mod siglip;
mod tokenizer_cli;
mod tokenizer_parity;
mod torch_pickle;
mod train;

//! Datasets on disk: writing WebDataset shards and generating the embedded synthetic default.
pub mod synth;
pub mod writer;

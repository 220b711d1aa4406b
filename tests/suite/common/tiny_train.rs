//! The tiny training run of the training and failure tests: a very small CLIP on a small
//! synthetic dataset, and readers for what a run leaves (losses, weights).
use super::small_synth;
use cliptrain::config;
use std::path::Path;
use tch::Tensor;

/// A small dataset, its tokenizer and a config for a very small CLIP, in `d`.
pub fn setup(d: &Path) {
    small_synth(d, 96, 8, 32);
    std::fs::write(
        d.join("tiny.toml"),
        r#"
[run]
name = "t"
output_dir = "runs"
device = "cpu"
threads = 1
seed = 3
[data]
train = "syn/train-{000000..000002}.tar"
tokenizer = "syn/tok.json"
shuffle_buffer = 16
workers = 1
[model]
embed_dim = 16
[model.vision]
image_size = 32
patch_size = 8
width = 32
layers = 1
heads = 2
[model.text]
vocab_size = 600
context_length = 16
width = 32
layers = 1
heads = 2
[optim]
steps = 6
batch_size = 8
warmup_steps = 2
lr = 1e-3
[checkpoint]
every = 2
keep = 0
[log]
every = 1
tensorboard = false
progress = "plain"
"#,
    )
    .unwrap();
}

/// `tiny.toml` in `d` with `overrides` (`section.key=value`) and its paths made absolute, for
/// runs through the library (the tests of a binary share one working directory).
pub fn tiny_config(d: &Path, overrides: &[&str]) -> config::Config {
    let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    let mut cfg = config::load(&d.join("tiny.toml"), &overrides).unwrap();
    let abs = |p: &str| d.join(p).to_string_lossy().into_owned();
    cfg.data.train = abs(&cfg.data.train);
    cfg.data.tokenizer = abs(&cfg.data.tokenizer);
    cfg.run.output_dir = d.join(&cfg.run.output_dir);
    cfg
}

pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

pub fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

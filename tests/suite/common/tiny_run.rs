//! A tiny trained run shared by the interop, fine-tuning and embedding tests.
use super::{cliptrain, ok, small_synth};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// In `d`: synthetic data (`syn/`, 64 train + 8 eval samples at 32 px), a 600-id tokenizer
/// (`syn/tok.json`), `tiny.toml` (a very small CLIP with `activation`) and its 2-step run
/// `runs/t`. Returns the checkpoint folder.
pub fn trained_run(d: &Path, activation: &str) -> PathBuf {
    small_synth(d, 64, 8, 32);
    std::fs::write(d.join("tiny.toml"), tiny_toml(activation)).unwrap();
    ok(cliptrain(&["train", "--config", "tiny.toml"], d));
    d.join("runs/t/latest").canonicalize().unwrap()
}

/// [`trained_run`], with the checkpoint's 1-d parameters moved off their init so a swapped one
/// would show in a comparison.
pub fn trained_checkpoint(d: &Path, activation: &str) -> PathBuf {
    let ckpt = trained_run(d, activation);
    let path = ckpt.join("model.safetensors");
    let moved: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let t = if t.dim() == 1 {
                &t + t.randn_like() * 0.1
            } else {
                t
            };
            (n, t)
        })
        .collect();
    Tensor::write_safetensors(&moved, &path).unwrap();
    ckpt
}

pub fn tiny_toml(activation: &str) -> String {
    format!(
        r#"
[run]
name = "t"
output_dir = "runs"
device = "cpu"
threads = 1
seed = 3
[data]
train = "syn/train-{{000000..000001}}.tar"
tokenizer = "syn/tok.json"
shuffle_buffer = 16
workers = 1
image_mean = [0.5, 0.45, 0.4]
image_std = [0.25, 0.26, 0.27]
[model]
embed_dim = 16
activation = "{activation}"
[model.vision]
image_size = 32
patch_size = 8
width = 32
layers = 2
heads = 2
[model.text]
vocab_size = 600
context_length = 16
width = 32
layers = 2
heads = 2
[optim]
steps = 2
batch_size = 8
warmup_steps = 1
lr = 1e-3
[checkpoint]
every = 0
[log]
every = 1
tensorboard = false
progress = "plain"
"#
    )
}

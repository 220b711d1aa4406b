//! The one tiny training config of the tests ([`TINY_CONFIG`]: a very small CLIP on the
//! synthetic data of [`small_synth`]) and the variants tests derive from it with [`Tiny`]:
//! `section.key=value` changes (as `--set` spells them), keys or sections removed, and TOML
//! fragments merged in. Also the runs made from it and readers for what a run leaves.
use super::{cliptrain, ok, rng_lock, small_synth};
use cliptrain::config;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The base tiny config: 32 px images in 8 px patches, one 32-wide layer per tower, a 600-id
/// vocabulary; 6 steps of 8 pairs from `syn/train-{000000..000002}.tar` (96 samples in shards of
/// 32), a checkpoint every 2 steps and all of them kept. [`setup`] writes it as `tiny.toml`;
/// the checkpoint in `tests/fixtures/checkpoint-per-tensor-adamw` was trained from it.
pub const TINY_CONFIG: &str = r#"
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
"#;

/// A run config: [`TINY_CONFIG`] and the changes a test makes to it.
#[derive(Clone, Debug)]
pub struct Tiny(toml::Table);

/// [`TINY_CONFIG`], to change with [`Tiny`]'s methods.
pub fn tiny() -> Tiny {
    Tiny(toml::from_str(TINY_CONFIG).unwrap())
}

/// The parent table of the dotted `key` (created as needed) and the key's last part.
fn parent<'a>(table: &'a mut toml::Table, key: &'a str) -> (&'a mut toml::Table, &'a str) {
    let (path, last) = key.rsplit_once('.').map_or(("", key), |(p, l)| (p, l));
    let mut t = table;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        t = t
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{part} of {key} is not a table"));
    }
    (t, last)
}

/// `from` merged into `into`: tables key by key, anything else replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Tiny {
    /// `section.key=value`, the value a TOML literal (`optim.steps=2`, `run.name="ft"`,
    /// `data.image_std=[0.5, 0.5, 0.5]`); a missing key or section is added.
    pub fn set(mut self, assignment: &str) -> Self {
        let (key, value) = assignment
            .split_once('=')
            .unwrap_or_else(|| panic!("{assignment:?} is not key=value"));
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .unwrap_or_else(|e| panic!("{assignment:?}: {e}"))
            .remove("v")
            .unwrap();
        let (table, last) = parent(&mut self.0, key.trim());
        table.insert(last.to_string(), value);
        self
    }

    /// [`Tiny::set`] for each of `assignments`.
    pub fn sets(self, assignments: &[&str]) -> Self {
        assignments.iter().fold(self, |t, a| t.set(a))
    }

    /// Removes the dotted `key`: a value or a whole section (`"model"`), which must be there.
    pub fn unset(mut self, key: &str) -> Self {
        let (table, last) = parent(&mut self.0, key);
        assert!(table.remove(last).is_some(), "no {key} to remove");
        self
    }

    /// `fragment` (TOML text: sections, arrays of tables) merged in, key by key.
    pub fn merge(mut self, fragment: &str) -> Self {
        let from = toml::from_str(fragment).unwrap_or_else(|e| panic!("{fragment}: {e}"));
        merge(&mut self.0, from);
        self
    }

    /// The config as TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.0).unwrap()
    }

    /// Writes [`Tiny::text`] to `path`.
    pub fn write(&self, path: impl AsRef<Path>) {
        std::fs::write(path, self.text()).unwrap();
    }
}

/// The variant of the interop, fine-tuning, embedding and evaluation tests: 2 layers per tower
/// with `activation`, image mean/std of their own, 2 steps from the first 2 shards (64 samples)
/// and only the last checkpoint.
pub fn two_step(activation: &str) -> Tiny {
    tiny().sets(&[
        r#"data.train="syn/train-{000000..000001}.tar""#,
        "data.image_mean=[0.5, 0.45, 0.4]",
        "data.image_std=[0.25, 0.26, 0.27]",
        &format!("model.activation={activation:?}"),
        "model.vision.layers=2",
        "model.text.layers=2",
        "optim.steps=2",
        "optim.warmup_steps=1",
        "checkpoint.every=0",
    ])
}

/// In `d`: a small dataset (96 train + 8 eval samples at 32 px, shards of 32), its tokenizer
/// and [`TINY_CONFIG`] as `tiny.toml`.
pub fn setup(d: &Path) {
    setup_with(d, &tiny());
}

/// [`setup`] with `cfg` as `tiny.toml`.
pub fn setup_with(d: &Path, cfg: &Tiny) {
    small_synth(d, 96, 8, 32);
    cfg.write(d.join("tiny.toml"));
}

/// `tiny.toml` in `d` with `overrides` (`section.key=value`) and its paths made absolute, for
/// runs through the library (the tests share one working directory).
pub fn tiny_config(d: &Path, overrides: &[&str]) -> config::Config {
    let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    let mut cfg = config::load(&d.join("tiny.toml"), &overrides).unwrap();
    let abs = |p: &str| d.join(p).to_string_lossy().into_owned();
    cfg.data.train = abs(&cfg.data.train);
    cfg.data.tokenizer = abs(&cfg.data.tokenizer);
    cfg.run.output_dir = d.join(&cfg.run.output_dir);
    cfg
}

/// In `d`: synthetic data (`syn/`, 64 train + 8 eval samples at 32 px), a 600-id tokenizer
/// (`syn/tok.json`), `tiny.toml` ([`two_step`] with `activation`) and its 2-step run `runs/t`.
/// Returns the checkpoint folder.
pub fn trained_run(d: &Path, activation: &str) -> PathBuf {
    small_synth(d, 64, 8, 32);
    two_step(activation).write(d.join("tiny.toml"));
    ok(cliptrain(&["train", "--config", "tiny.toml"], d));
    d.join("runs/t/latest").canonicalize().unwrap()
}

/// [`trained_run`], with the checkpoint's 1-d parameters moved off their init so a swapped one
/// would show in a comparison.
pub fn trained_checkpoint(d: &Path, activation: &str) -> PathBuf {
    let ckpt = trained_run(d, activation);
    let path = ckpt.join("model.safetensors");
    let _rng = rng_lock();
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

/// `cliptrain -q train --config tiny.toml --set run.name=NAME` plus `more` (`--stop-at-step 2`,
/// `--resume auto`) in `d`; its stdout.
pub fn train_named(d: &Path, name: &str, more: &[&str]) -> String {
    let set = format!("run.name={name}");
    let args = [
        &["-q", "train", "--config", "tiny.toml", "--set", &set][..],
        more,
    ]
    .concat();
    ok(cliptrain(&args, d))
}

/// `(step, loss)` of each train row of a run's `metrics.jsonl`.
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// A checkpoint folder's weights, sorted by name.
pub fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

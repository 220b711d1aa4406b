//! Helpers shared by the integration tests.
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod benchmark;
pub mod hub_server;
pub mod tiny;

/// The repository root (configs/, scripts/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// In `d`: `cliptrain data synth` into `syn/` (32 px images, `train` + `eval` samples,
/// `shard_size` per shard) and a 600-id BPE tokenizer `syn/tok.json` trained on its captions.
pub fn small_synth(d: &Path, train: usize, eval: usize, shard_size: usize) {
    let (train_s, eval_s, shard_s) = (train.to_string(), eval.to_string(), shard_size.to_string());
    ok(cliptrain(
        &[
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            &train_s,
            "--eval",
            &eval_s,
            "--image-size",
            "32",
            "--shard-size",
            &shard_s,
        ],
        d,
    ));
    let last = train.div_ceil(shard_size) - 1;
    let spec = format!("syn/train-{{000000..{last:06}}}.tar");
    ok(cliptrain(
        &[
            "tokenizer",
            "train",
            "--data",
            &spec,
            "--vocab-size",
            "600",
            "--out",
            "syn/tok.json",
        ],
        d,
    ));
}

/// Runs the built `cliptrain` binary in `cwd`.
pub fn cliptrain(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run cliptrain")
}

/// The stdout of a run that must have succeeded (its stderr otherwise).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `scripts/{script}` (a reference side) with the venv's python and returns its stdout; a
/// failure shows both streams and names the fix.
pub fn reference(script: &str, args: &[&str]) -> String {
    let path = repo().join("scripts").join(script);
    let out = std::process::Command::new(venv_python())
        .arg(&path)
        .args(args)
        .output()
        .expect("running the venv python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/{script} {args:?} failed (its packages come from scripts/bootstrap.sh \
         --ref):\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The torch venv's python (the one `scripts/env.sh` puts first on PATH), which has the pinned
/// reference packages. Missing, it fails the test with the fix rather than skipping it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CLIPTRAIN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/cliptrain/venv-torch-2.11.0")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no python at {}: run scripts/bootstrap.sh --ref (or set CLIPTRAIN_VENV)",
        python.display()
    );
    python
}

static RNG: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`RNG`] (so that a helper taking it inside a test that already
    /// does is not a deadlock).
    static HOLDS_RNG: Cell<bool> = const { Cell::new(false) };
}

/// Exclusive use of libtorch's global RNG while it lives (see [`rng_lock`]).
pub struct RngGuard(Option<MutexGuard<'static, ()>>);

impl Drop for RngGuard {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            HOLDS_RNG.with(|h| h.set(false));
        }
    }
}

/// The tests are threads of one process and share libtorch's one global RNG: a test that seeds
/// it (`tch::manual_seed`, or `train::train`, which seeds it with `run.seed`) and then draws
/// from it, or that draws from it at all (`randn`, `randint`, a model's random init when it is
/// built or loaded, patch dropout), holds this for as long as it does, so that no other test's
/// draw falls between its seed and its draws. Re-entrant within a thread (an inner guard is a
/// no-op); a test that failed holding it does not poison it for the others.
pub fn rng_lock() -> RngGuard {
    if HOLDS_RNG.with(Cell::get) {
        return RngGuard(None);
    }
    let guard = RNG.lock().unwrap_or_else(PoisonError::into_inner);
    HOLDS_RNG.with(|h| h.set(true));
    RngGuard(Some(guard))
}

/// Captions of the reference comparisons: short, long, empty.
pub const CAPTIONS: [&str; 4] = [
    "a red circle",
    "two blue squares left of a small green triangle",
    "",
    "a big yellow star above a purple circle next to an orange square and a red triangle",
];

/// `model`'s embeddings of three random 32 px images and [`CAPTIONS`] (tokenized by `tok`),
/// written to `cmp/` with what the reference side must find: the ids, the image size and
/// `(mean, std)`, the EOT id. Hold [`rng_lock`] around it.
pub fn write_comparison(
    model: &cliptrain::model::ClipModel,
    tok: &cliptrain::text::TextTokenizer,
    (mean, std): ([f64; 3], [f64; 3]),
    cmp: &Path,
) {
    use tch::{Device, Kind, Tensor};
    std::fs::create_dir_all(cmp).unwrap();
    let ctx = tok.context_length() as i64;
    let ids = Tensor::from_slice(&tok.encode_batch(&CAPTIONS).unwrap()).view([4, ctx]);
    let px = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| model.forward(&px, &ids));
    let inputs = [("pixel_values", px), ("input_ids", ids)];
    Tensor::write_safetensors(&inputs, cmp.join("inputs.safetensors")).unwrap();
    let outputs = [
        ("image_embeds", out.image_embeds),
        ("text_embeds", out.text_embeds),
    ];
    Tensor::write_safetensors(&outputs, cmp.join("outputs.safetensors")).unwrap();
    std::fs::write(
        cmp.join("captions.json"),
        serde_json::to_string(&CAPTIONS).unwrap(),
    )
    .unwrap();
    let expect = serde_json::json!({
        "context_length": ctx, "eot": tok.eot_id(), "image_size": 32, "mean": mean, "std": std,
    });
    std::fs::write(cmp.join("expect.json"), expect.to_string()).unwrap();
}

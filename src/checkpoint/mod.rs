//! Checkpoints: the only module that maps training state to files.
//!
//! Layout of a run folder (`run.output_dir/run.name/`):
//! ```text
//! step-0000200/   model.safetensors      weights only, Hugging Face CLIPModel names
//!                 optimizer.safetensors  AdamW moments and step
//!                 ema.safetensors        the weights' moving average (optim.ema_decay > 0)
//!                 state.json             step, data-stream position, counters
//!                 config.toml            the effective config (resume compares it)
//!                 tokenizer.json         the tokenizer the run used (and the
//!                                        tokenizer_config.json / special_tokens_map.json beside it)
//!                 manifest.json          size and CRC-32 of each file above
//! latest -> step-0000200                 updated last, atomically
//! .lock                                  flock of the run writing here; holds its pid
//! ```
//! A checkpoint is written into a temporary folder and renamed into place, so a crash or
//! Ctrl-C mid-write never leaves a half checkpoint under a real name and never touches the
//! previous good one. A failed write removes its temporary folder; temporaries a killed process
//! left are removed by the next run to lock the folder ([`RunLock`]). A checkpoint damaged
//! afterwards fails [`verify`].
mod manifest;
mod run_lock;
mod state;

pub use manifest::verify;
pub use run_lock::RunLock;
pub use state::TrainState;

use std::path::{Path, PathBuf};
use tch::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    // The underlying error is part of the message, not a `source`: printed with its chain, it
    // would appear twice.
    #[error("{op} {}: {err}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{}: {err}", path.display())]
    Tensor { path: PathBuf, err: tch::TchError },
    #[error("{0}")]
    Tokenizer(String),
    #[error("{}: not a cliptrain checkpoint or run folder (no state.json, no `latest`)", .0.display())]
    NotFound(PathBuf),
    #[error("{}: bad state.json: {reason}", path.display())]
    BadState { path: PathBuf, reason: String },
    /// A `state.json` that parses but holds numbers no run could have saved.
    #[error(
        "{} holds {} value(s) no run could have saved (the file is damaged or was edited):\n  {}\n\
         Resume from another checkpoint (`--resume <checkpoint folder>`) or restore this one \
         from a copy",
        path.display(), problems.len(), problems.join("\n  ")
    )]
    StateOutOfRange {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{}: {source}", path.display())]
    BadConfig {
        path: PathBuf,
        source: crate::config::ConfigError,
    },
    #[error("checkpoint {} is damaged: {reason}", dir.display())]
    Corrupt { dir: PathBuf, reason: String },
    #[error(
        "{} is in use by another cliptrain process ({}): two runs writing one folder would log \
         every step twice and overwrite each other's checkpoints. Wait for it to end or stop it, \
         or choose another run.name",
        dir.display(),
        if holder.is_empty() { "pid not yet recorded".to_string() } else { format!("pid {holder}") }
    )]
    Locked { dir: PathBuf, holder: String },
    #[error(
        "no space left on the device of {} for checkpoint {name}: it needs {needed} bytes, {free} \
         are free; the temporary folder was removed and the previous checkpoints are intact. Free \
         space (a lower checkpoint.keep keeps fewer checkpoints) and resume with `--resume auto`",
        run_dir.display()
    )]
    NoSpace {
        run_dir: PathBuf,
        name: String,
        needed: u64,
        free: u64,
    },
}

/// What one checkpoint holds, in memory.
pub struct Checkpoint<'a> {
    pub model: &'a [(String, Tensor)],
    pub optimizer: &'a [(String, Tensor)],
    /// The moving average of the weights (`optim.ema_decay`), as `ema.safetensors`.
    pub ema: Option<&'a [(String, Tensor)]>,
    pub state: &'a TrainState,
    pub config_toml: &'a str,
    pub tokenizer_json: Option<&'a Path>,
}

pub(super) fn io(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + use<> {
    let path = path.to_path_buf();
    move |err| CheckpointError::Io { op, path, err }
}

/// The moving average of the weights beside `model.safetensors`, when the run keeps one.
pub const EMA_WEIGHTS: &str = "ema.safetensors";

/// The folder name of the checkpoint after `step` steps.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// Writes `ckpt` as `run_dir/step-NNNNNNN`, points `latest` at it, and prunes all but the
/// newest `keep` (0 = keep all). Returns the checkpoint folder. On failure nothing is left of
/// the attempt and the previous checkpoints are untouched.
pub fn save(run_dir: &Path, ckpt: &Checkpoint, keep: usize) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(run_dir).map_err(io("creating", run_dir))?;
    let name = step_dir_name(ckpt.state.step);
    let tmp = run_dir.join(format!(".tmp-{name}-{}", std::process::id()));
    run_lock::remove_any(&tmp)?;
    if let Err(e) = write_files(&tmp, ckpt) {
        let _ = run_lock::remove_any(&tmp);
        return Err(out_of_space(e, run_dir, &name, ckpt));
    }
    let final_dir = run_dir.join(&name);
    if final_dir.exists() {
        // Saving the same step again (a resumed run stopped before its first step): the old
        // one moves aside first, so a kill between the renames leaves the new one in place.
        let old = run_dir.join(format!(".tmp-replaced-{name}-{}", std::process::id()));
        std::fs::rename(&final_dir, &old).map_err(io("replacing", &final_dir))?;
        std::fs::rename(&tmp, &final_dir).map_err(io("renaming into", &final_dir))?;
        run_lock::remove_any(&old)?;
    } else {
        std::fs::rename(&tmp, &final_dir).map_err(io("renaming into", &final_dir))?;
    }
    point_latest(run_dir, &name)?;
    prune(run_dir, keep)?;
    Ok(final_dir)
}

/// Every file of `ckpt`, and last its manifest, into the new folder `dir`.
fn write_files(dir: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    write_tensors(&dir.join("model.safetensors"), ckpt.model)?;
    write_tensors(&dir.join("optimizer.safetensors"), ckpt.optimizer)?;
    if let Some(ema) = ckpt.ema {
        write_tensors(&dir.join(EMA_WEIGHTS), ema)?;
    }
    let state = serde_json::to_string_pretty(ckpt.state).expect("state serializes");
    write_synced(&dir.join("state.json"), state.as_bytes())?;
    write_synced(&dir.join("config.toml"), ckpt.config_toml.as_bytes())?;
    if let Some(tok) = ckpt.tokenizer_json {
        // A SentencePiece model is stored converted, so the checkpoint is one format.
        let bytes = crate::text::spm::tokenizer_json_bytes(tok)
            .map_err(|e| CheckpointError::Tokenizer(e.to_string()))?;
        write_synced(&dir.join("tokenizer.json"), &bytes)?;
        // The files beside it may name its specials (see `text::TokenizerOptions`).
        for side in crate::text::SIDECAR_FILES {
            let from = tok.with_file_name(side);
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(io("reading", &from))?;
                write_synced(&dir.join(side), &bytes)?;
            }
        }
    }
    manifest::write(dir)
}

/// `err` as [`CheckpointError::NoSpace`] when the disk (or the user's quota) is full, with the
/// checkpoint's size and the space free once its temporary folder is gone.
fn out_of_space(
    err: CheckpointError,
    run_dir: &Path,
    name: &str,
    ckpt: &Checkpoint,
) -> CheckpointError {
    let CheckpointError::Io { err: e, .. } = &err else {
        return err;
    };
    if !matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return err;
    }
    CheckpointError::NoSpace {
        run_dir: run_dir.to_path_buf(),
        name: name.to_string(),
        needed: size_of(ckpt),
        free: crate::runtime::disk_free(run_dir).unwrap_or(0),
    }
}

/// About how many bytes `ckpt` takes on disk: its tensors' data and its text files.
fn size_of(ckpt: &Checkpoint) -> u64 {
    let tensors = |named: &[(String, Tensor)]| -> u64 {
        named
            .iter()
            .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    };
    let tokenizer = ckpt
        .tokenizer_json
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    tensors(ckpt.model) + tensors(ckpt.optimizer) + ckpt.config_toml.len() as u64 + tokenizer + 4096
}

/// Writes named tensors as a safetensors file, synced to disk: checkpoints and exports alike.
pub fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    // safetensors needs contiguous CPU tensors; copies are cheap next to the write.
    let owned: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, path).map_err(|err| match err {
        // A full disk (or any I/O failure) reads as one, not as a file-format error.
        tch::TchError::SafeTensorError {
            err: safetensors::SafeTensorError::IoError(e),
            ..
        } => io("writing", path)(e),
        err => CheckpointError::Tensor {
            path: path.into(),
            err,
        },
    })?;
    sync(path)
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    std::fs::write(path, bytes).map_err(io("writing", path))?;
    sync(path)
}

fn sync(path: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", path))
}

/// `latest` is a symlink to the newest checkpoint folder, swapped in with an atomic rename.
fn point_latest(run_dir: &Path, name: &str) -> Result<(), CheckpointError> {
    let tmp = run_dir.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp).map_err(io("linking", &tmp))?;
    let latest = run_dir.join("latest");
    if std::fs::symlink_metadata(&latest).is_ok_and(|m| m.is_dir()) {
        // A run folder copied by a tool that follows links has a real folder here.
        std::fs::remove_dir_all(&latest).map_err(io("replacing", &latest))?;
    }
    std::fs::rename(&tmp, &latest).map_err(io("updating", &latest))
}

/// Complete checkpoints in `run_dir`, oldest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return vec![];
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn prune(run_dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(run_dir);
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
        // Renamed first, so a kill mid-delete leaves a temporary, never a half checkpoint.
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let doomed = run_dir.join(format!(".tmp-pruned-{name}-{}", std::process::id()));
        std::fs::rename(dir, &doomed).map_err(io("pruning", dir))?;
        run_lock::remove_any(&doomed)?;
    }
    Ok(())
}

/// A checkpoint folder from a checkpoint folder itself or a run folder (its `latest`, or the
/// newest complete checkpoint when `latest` is missing).
pub fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("latest");
    if latest.join("state.json").is_file() {
        return latest.canonicalize().map_err(io("resolving", &latest));
    }
    list(path)
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| CheckpointError::NotFound(path.to_path_buf()))
}

pub fn read_state(dir: &Path) -> Result<TrainState, CheckpointError> {
    let p = dir.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(io("reading", &p))?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::BadState {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The effective config saved with the checkpoint in `dir` (`config.toml`).
pub fn read_config(dir: &Path) -> Result<crate::config::Config, CheckpointError> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
    crate::config::load_str(&text, &[])
        .map_err(|source| CheckpointError::BadConfig { path, source })
}

/// The named tensors of a safetensors file (a checkpoint's, or any model folder's weights).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Tensor::read_safetensors(path).map_err(|err| CheckpointError::Tensor {
        path: path.into(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const FLOAT: (tch::Kind, tch::Device) = (tch::Kind::Float, tch::Device::Cpu);

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            samples_seen: step * 4,
            ranks: vec![
                serde_json::from_str(
                    r#"{"fingerprint":"x","epoch":0,"cursor":0,"offset":0,"emitted":0,"buffer":[],"skipped":{},"empty_run":0}"#,
                )
                .unwrap(),
            ],
            bad_steps_in_a_row: 0,
            bad_steps_total: 0,
            seed: 1,
            cliptrain_version: "t".into(),
            loss_scale: None,
        }
    }

    #[test]
    fn save_resolve_prune_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            save_tiny(dir.path(), step, 2.0, None, 2).unwrap();
        }
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [20, 30], "keep = 2 prunes the oldest");
        let latest = resolve(dir.path()).unwrap();
        assert!(latest.ends_with("step-0000030"), "{}", latest.display());
        assert_eq!(read_state(&latest).unwrap(), state(30));
        let t = read_tensors(&latest.join("model.safetensors")).unwrap();
        assert_eq!(t[0].0, "w");
        assert!(t[0].1.equal(&Tensor::from_slice(&[1.0f32, 2.0])));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
        );
        assert!(matches!(
            resolve(&dir.path().join("nothing")),
            Err(CheckpointError::NotFound(_))
        ));
    }

    #[test]
    fn a_half_written_checkpoint_is_never_taken_for_a_real_one() {
        let dir = tempfile::tempdir().unwrap();
        save_tiny(dir.path(), 5, 1.0, None, 0).unwrap();
        // A crash while writing step 9 leaves only a temp folder behind.
        std::fs::create_dir_all(dir.path().join(".tmp-step-0000009-1")).unwrap();
        std::fs::create_dir_all(dir.path().join("step-0000009")).unwrap(); // no state.json: incomplete
        assert!(resolve(dir.path()).unwrap().ends_with("step-0000005"));
    }

    /// Saves a checkpoint of one weight `w = [1, v]` at `step` into `dir`, keeping `keep`.
    fn save_tiny(
        dir: &Path,
        step: u64,
        v: f32,
        tokenizer_json: Option<&Path>,
        keep: usize,
    ) -> Result<PathBuf, CheckpointError> {
        let w = vec![("w".to_string(), Tensor::from_slice(&[1.0f32, v]))];
        let s = state(step);
        let ckpt = Checkpoint {
            model: &w,
            optimizer: &[],
            ema: None,
            state: &s,
            config_toml: "[run]\n",
            tokenizer_json,
        };
        save(dir, &ckpt, keep)
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_and_the_previous_checkpoint_stands() {
        let dir = tempfile::tempdir().unwrap();
        save_tiny(dir.path(), 5, 1.0, None, 0).unwrap();
        let missing = Path::new("/nonexistent/tokenizer.json");
        let err = save_tiny(dir.path(), 7, 2.0, Some(missing), 0).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tokenizer.json"),
            "{err}"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        assert!(resolve(dir.path()).unwrap().ends_with("step-0000005"));
        verify(&dir.path().join("step-0000005")).unwrap();
    }

    #[test]
    fn a_full_disk_is_reported_with_the_run_folder_and_the_bytes_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (w, s) = (vec![("w".to_string(), Tensor::zeros([4], FLOAT))], state(7));
        let ckpt = Checkpoint {
            model: &w,
            optimizer: &[],
            ema: None,
            state: &s,
            config_toml: "",
            tokenizer_json: None,
        };
        let full = CheckpointError::Io {
            op: "writing",
            path: dir.path().join(".tmp-step-0000007-1/model.safetensors"),
            err: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let err = out_of_space(full, dir.path(), "step-0000007", &ckpt);
        let CheckpointError::NoSpace { needed, .. } = &err else {
            panic!("{err}");
        };
        assert!(*needed >= 16, "four f32 weights at least");
        let msg = err.to_string();
        let want = format!(
            "no space left on the device of {} for checkpoint step-0000007: it needs {needed} bytes",
            dir.path().display()
        );
        assert!(msg.starts_with(&want), "{msg}");
        let other = CheckpointError::NotFound(dir.path().into());
        assert!(matches!(
            out_of_space(other, dir.path(), "x", &ckpt),
            CheckpointError::NotFound(_)
        ));
    }

    #[test]
    fn verify_names_a_cut_short_or_damaged_file_and_non_finite_weights() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = save_tiny(dir.path(), 1, 1.0, None, 0).unwrap();
        verify(&ckpt).unwrap();
        let model = ckpt.join("model.safetensors");
        let mut bytes = std::fs::read(&model).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&model, &bytes).unwrap();
        let err = verify(&ckpt).unwrap_err().to_string();
        assert!(err.contains("model.safetensors has CRC-32"), "{err}");
        std::fs::write(&model, &bytes[..last]).unwrap();
        let err = verify(&ckpt).unwrap_err().to_string();
        let cut = format!(
            "model.safetensors is {last} bytes, the manifest says {}",
            last + 1
        );
        assert!(err.contains(&cut), "{err}");
        // A checkpoint without a manifest (written before them) is checked by structure.
        let nan = save_tiny(dir.path(), 2, f32::NAN, None, 0).unwrap();
        std::fs::remove_file(nan.join(manifest::MANIFEST)).unwrap();
        let err = verify(&nan).unwrap_err().to_string();
        assert!(err.contains("`w` holds non-finite values"), "{err}");
    }

    #[test]
    fn a_latest_folder_from_a_copy_that_followed_links_is_replaced_by_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("latest")).unwrap();
        std::fs::write(dir.path().join("latest/state.json"), "{}").unwrap();
        save_tiny(dir.path(), 3, 1.0, None, 0).unwrap();
        let link = std::fs::read_link(dir.path().join("latest")).unwrap();
        assert_eq!(link, Path::new("step-0000003"));
    }
}

//! Continuing a run: which checkpoint to start from, whether this config may continue it, and
//! restoring its weights, optimizer state and data position.
//!
//! A checkpoint may be continued by a config that differs from its saved `config.toml` only in
//! keys that change neither the math nor the data stream ([`MAY_CHANGE_ON_RESUME`]): the run
//! may be renamed or moved, run on other hardware, extended, logged, evaluated and checkpointed
//! differently. Every other key must match, and a refusal names each one that differs.
use super::{Resume, TrainError, build};
use crate::checkpoint::{self, TrainState};
use crate::config::{Config, flat_keys};
use crate::dist::Dist;
use crate::optim::AdamW;
use std::fmt;
use std::path::{Path, PathBuf};
use tch::nn;

/// Config keys that may differ from the checkpoint's when resuming; an entry ending in `.`
/// stands for its whole section. Everything else must match.
/// - where the run lives and what it runs on: `run.name`, `run.output_dir`, `run.device`,
///   `run.threads`, and the decode threads and queue (`data.workers`, `data.prefetch`);
/// - `data.strict`: whether a missing shard file is an error, not which samples are read;
/// - `data.tokenizer`: its *content* must match the checkpoint's `tokenizer.json` instead;
/// - `model.init_from`, `model.init_strict`: only a fresh run reads the weights they name;
///   likewise `run.loss_scale`, the fp16 scale a fresh run starts from (a resume continues from
///   the checkpoint's);
/// - `optim.steps` (extend or shorten the run; the LR schedule is recomputed over the new
///   length, as OpenCLIP does), `optim.micro_batch_size` (feature caching gives the same
///   gradients), `optim.max_bad_steps` (a tolerance, not the math), `optim.fused` (the same
///   AdamW arithmetic and saved state in another kernel);
/// - `[eval]`, `[checkpoint]`, `[log]`, and `dist.timeout_s`, `dist.bucket_mb`.
pub const MAY_CHANGE_ON_RESUME: &[&str] = &[
    "run.name",
    "run.output_dir",
    "run.device",
    "run.threads",
    "run.loss_scale",
    "data.tokenizer",
    "data.workers",
    "data.prefetch",
    "data.strict",
    "model.init_from",
    "model.init_strict",
    "model.grad_checkpointing",
    "optim.steps",
    "optim.micro_batch_size",
    "optim.max_bad_steps",
    "optim.fused",
    "eval.",
    "checkpoint.",
    "log.",
    "dist.timeout_s",
    "dist.bucket_mb",
];

/// A key whose value differs between a checkpoint's config and the resuming run's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// `section.key`, as in `--set`.
    pub key: String,
    pub saved: String,
    pub now: String,
}

impl fmt::Display for KeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} in the checkpoint, {} now",
            self.key, self.saved, self.now
        )
    }
}

/// The checkpoint a run continues from, if any, per `--resume`. A damaged checkpoint (see
/// [`checkpoint::verify`]) named by a path is refused; `auto` passes over damaged ones with a
/// warning and takes the newest intact one.
pub(super) fn choose(run_dir: &Path, resume: &Resume) -> Result<Option<PathBuf>, TrainError> {
    match resume {
        Resume::No => {
            if !checkpoint::list(run_dir).is_empty() {
                return Err(TrainError::Setup(format!(
                    "{} already has checkpoints; continue it with `--resume auto`, or choose another run.name",
                    run_dir.display()
                )));
            }
            Ok(None)
        }
        Resume::Auto => newest_intact(run_dir),
        Resume::From(p) => {
            let dir = checkpoint::resolve(p)?;
            checkpoint::verify(&dir)?;
            Ok(Some(dir))
        }
    }
}

/// The newest checkpoint in `run_dir` that passes [`checkpoint::verify`]; none when the run has
/// no checkpoint, an error naming each one when all are damaged.
fn newest_intact(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    let mut newest_first: Vec<PathBuf> = checkpoint::list(run_dir)
        .into_iter()
        .rev()
        .map(|(_, dir)| dir)
        .collect();
    if newest_first.is_empty() {
        // A checkpoint folder itself, or only a `latest` folder (a copy that followed links).
        newest_first.extend(checkpoint::resolve(run_dir).ok());
    }
    let mut damaged = vec![];
    for dir in newest_first {
        match checkpoint::verify(&dir) {
            Ok(()) => return Ok(Some(dir)),
            Err(e @ checkpoint::CheckpointError::Corrupt { .. }) => {
                tracing::warn!("{e}; passing over it to an older checkpoint");
                damaged.push(format!("  {e}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    Err(TrainError::Setup(format!(
        "{} has no intact checkpoint to resume:\n{}\nRestore one from a copy, or move them out \
         of the folder to start the run over",
        run_dir.display(),
        damaged.join("\n")
    )))
}

/// Refuses to continue the checkpoint in `dir` with `cfg` when a key outside
/// [`MAY_CHANGE_ON_RESUME`] differs from its saved `config.toml`, or when `data.tokenizer` is
/// not the tokenizer it saved.
pub(super) fn check_config(dir: &Path, cfg: &Config) -> Result<(), TrainError> {
    let saved = checkpoint::read_config(dir)?;
    let changes = changed_keys(&saved, cfg);
    if !changes.is_empty() {
        return Err(TrainError::ConfigChanged {
            dir: dir.to_path_buf(),
            changes,
        });
    }
    // The path may change (a moved project); the vocabulary may not. An unreadable file is
    // left to the tokenizer loader to report.
    let tok = PathBuf::from(&cfg.data.tokenizer);
    if let (Ok(saved), Ok(now)) = (
        std::fs::read(dir.join("tokenizer.json")),
        std::fs::read(&tok),
    ) && saved != now
    {
        return Err(TrainError::TokenizerChanged {
            path: tok,
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// The keys outside [`MAY_CHANGE_ON_RESUME`] whose values differ, in key order.
pub fn changed_keys(saved: &Config, now: &Config) -> Vec<KeyChange> {
    let (saved, now) = (flat_keys(saved), flat_keys(now));
    saved
        .iter()
        .filter(|(key, _)| !may_change(key))
        .filter_map(|(key, old)| {
            let new = now.get(key)?;
            (old != new).then(|| KeyChange {
                key: key.clone(),
                saved: old.clone(),
                now: new.clone(),
            })
        })
        .collect()
}

fn may_change(key: &str) -> bool {
    MAY_CHANGE_ON_RESUME
        .iter()
        .any(|k| match k.strip_suffix('.') {
            Some(section) => key
                .strip_prefix(section)
                .is_some_and(|r| r.starts_with('.')),
            None => key == *k,
        })
}

/// Loads the checkpoint in `dir` into the model and optimizer; returns its state with this
/// rank's data position when the job has as many processes as the run that saved it (with
/// another number, the data loader re-partitions the saved positions of every rank:
/// `data::stream::resize`).
pub(super) fn restore(
    dir: &Path,
    dist: &Dist,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
) -> Result<TrainState, TrainError> {
    let mut state = checkpoint::read_state(dir)?;
    build::load_checkpoint_weights(vs, dir)?;
    let path = dir.join("optimizer.safetensors");
    opt.load_state(checkpoint::read_tensors(&path)?)
        .map_err(|source| TrainError::OptimizerState { path, source })?;
    if state.world_size == dist.world_size {
        state.data = dist.stream_state_of(&state)?;
    } else if dist.is_main() {
        tracing::info!(
            "elastic resume: the checkpoint was written by {} process(es), this run has {}; \
             the data stream is re-partitioned over the new ranks",
            state.world_size,
            dist.world_size
        );
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_that_change_the_math_or_the_data_are_compared() {
        let saved = Config::default();
        let mut now = saved.clone();
        now.run.name = "moved".into();
        now.run.output_dir = "elsewhere".into();
        now.optim.steps += 100;
        now.eval.every = 7;
        now.dist.bucket_mb = 1;
        assert_eq!(changed_keys(&saved, &now), []);
        now.model.vision.width = 64;
        now.data.crop_scale = [1.0, 1.0];
        now.dist.local_loss = true;
        let keys: Vec<String> = changed_keys(&saved, &now)
            .into_iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "data.crop_scale: [0.9, 1.0] in the checkpoint, [1.0, 1.0] now",
                "dist.local_loss: false in the checkpoint, true now",
                "model.vision.width: 768 in the checkpoint, 64 now",
            ]
        );
    }

    #[test]
    fn auto_takes_the_newest_intact_checkpoint_and_with_none_names_each_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let model = vec![("w".to_string(), tch::Tensor::from_slice(&[1.0f32, 2.0]))];
        let mut state: TrainState = serde_json::from_str(
            r#"{"step":0,"samples_seen":0,"data":{"fingerprint":"x","epoch":0,"cursor":0,
            "offset":0,"emitted":0,"buffer":[],"skipped":{},"empty_run":0},
            "bad_steps_in_a_row":0,"bad_steps_total":0,"seed":1,"cliptrain_version":"t"}"#,
        )
        .unwrap();
        for step in 1..=3 {
            state.step = step;
            let ckpt = checkpoint::Checkpoint {
                model: &model,
                optimizer: &[],
                state: &state,
                config_toml: "",
                tokenizer_json: None,
            };
            checkpoint::save(run, &ckpt, 0).unwrap();
        }
        let damage = |step: u64| {
            let path = run.join(checkpoint::step_dir_name(step)).join("state.json");
            std::fs::write(path, "{").unwrap();
        };
        damage(3);
        let chosen = choose(run, &Resume::Auto).unwrap().unwrap();
        assert!(chosen.ends_with("step-0000002"), "{}", chosen.display());
        damage(2);
        damage(1);
        let err = choose(run, &Resume::Auto).unwrap_err().to_string();
        for step in 1..=3 {
            let named = format!("step-000000{step} is damaged: state.json is 1 bytes");
            assert!(err.contains(&named), "{err}");
        }
    }

    #[test]
    fn a_section_entry_covers_only_its_own_keys() {
        assert!(may_change("eval.every") && may_change("log.every"));
        assert!(!may_change("evaluation.every"));
        assert!(!may_change("run.seed") && !may_change("optim.lr"));
    }
}

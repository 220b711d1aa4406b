//! Continuing a run: which checkpoint to start from, whether this config may continue it,
//! restoring its weights and optimizer state, and where each rank's data stream continues —
//! its own saved position, or every saved position re-partitioned when the job has another
//! number of ranks (elastic resume; the re-partitioning itself is `data::stream::resize`).
//! Every rank's position is gathered here for the checkpoint.
//!
//! A checkpoint may be continued by a config that differs from its saved `config.toml` only in
//! keys that change neither the math nor the data stream ([`MAY_CHANGE_ON_RESUME`]): the run
//! may be renamed or moved, run on other hardware, extended, logged, evaluated and checkpointed
//! differently. Every other key must match, and a refusal names each one that differs.
use super::{Resume, TrainError, build};
use crate::checkpoint::{self, TrainState};
use crate::config::{Config, flat_keys};
use crate::data::DataError;
use crate::data::mixture::{SampleStream, TrainShards};
use crate::data::stream::{StreamOptions, StreamState};
use crate::dist::Dist;
use crate::optim::{AdamW, Ema, EmaError};
use std::fmt;
use std::path::{Path, PathBuf};
use tch::nn;

/// Config keys that may differ from the checkpoint's when resuming; an entry ending in `.`
/// stands for its whole section. Everything else must match. Why each may change is the table
/// in configs/README.md, "Resuming a run" (a test holds the two equal).
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
        crate::text::spm::tokenizer_json_bytes(&tok),
    ) && saved != now
    {
        return Err(TrainError::TokenizerChanged {
            path: tok,
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Refuses the checkpoint in `dir` when its `state.json` holds a number no run of `cfg` over
/// `sources` could have saved (a damaged or edited file): every such field is named, before
/// any of them indexes a shard list, sizes a loop or reaches libtorch.
pub(super) fn check_state(
    dir: &Path,
    cfg: &Config,
    sources: &TrainShards,
) -> Result<(), TrainError> {
    let state = checkpoint::read_state(dir)?;
    let mut problems = state.problems(
        cfg.optim.batch_size,
        cfg.run.seed,
        cfg.run.loss_scale_growth_interval,
    );
    let opts = super::input::stream_options(cfg, 0, state.ranks.len());
    // A rank's loader reads ahead at most its share of one global batch.
    let max_replay = cfg.optim.batch_size as u64;
    problems.extend(SampleStream::position_problems(
        sources,
        &opts,
        &state.ranks,
        max_replay,
    ));
    if problems.is_empty() {
        return Ok(());
    }
    Err(checkpoint::CheckpointError::StateOutOfRange {
        path: dir.join("state.json"),
        problems,
    }
    .into())
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

/// Loads the checkpoint in `dir` into the model and optimizer and returns its state (with
/// every rank's data position: [`StreamStart`] picks this rank's).
pub(super) fn restore(
    dir: &Path,
    dist: &Dist,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
) -> Result<TrainState, TrainError> {
    let state = checkpoint::read_state(dir)?;
    build::load_checkpoint_weights(vs, dir)?;
    let path = dir.join("optimizer.safetensors");
    opt.load_state(checkpoint::read_tensors(&path)?)
        .map_err(|source| TrainError::OptimizerState { path, source })?;
    if state.world_size() != dist.world_size && dist.is_main() {
        tracing::info!(
            "elastic resume: the checkpoint was written by {} process(es), this run has {}; \
             the data stream is re-partitioned over the new ranks",
            state.world_size(),
            dist.world_size
        );
    }
    Ok(state)
}

/// Restores the run's weight average from the checkpoint's `ema.safetensors`.
pub(super) fn restore_ema(dir: &Path, ema: &mut Ema) -> Result<(), TrainError> {
    let path = dir.join(checkpoint::EMA_WEIGHTS);
    if !path.is_file() {
        let source = EmaError::missing();
        return Err(TrainError::Ema { path, source });
    }
    ema.load(checkpoint::read_tensors(&path)?)
        .map_err(|source| TrainError::Ema { path, source })
}

/// Where this rank's data stream starts: at the beginning, or where a checkpoint left it.
pub(super) enum StreamStart {
    /// A fresh run (or a checkpoint of step 0).
    Fresh,
    /// The positions of every rank of the run that saved the checkpoint, after `step` steps.
    Saved { step: u64, ranks: Vec<StreamState> },
}

impl StreamStart {
    pub(super) fn of(state: &TrainState) -> Self {
        if state.step == 0 {
            return Self::Fresh;
        }
        Self::Saved {
            step: state.step,
            ranks: state.ranks.clone(),
        }
    }

    /// The position rank `opts.rank` of `opts.world_size` continues from: its own when the job
    /// has as many ranks as the saved run; else every saved position re-partitioned over this
    /// job (elastic resume, `data::stream::resize`).
    pub(super) fn position(
        &self,
        sources: &TrainShards,
        opts: &StreamOptions,
    ) -> Result<Option<StreamState>, DataError> {
        match self {
            Self::Fresh => Ok(None),
            Self::Saved { ranks, .. } if ranks.len() == opts.world_size => {
                Ok(ranks.get(opts.rank).cloned())
            }
            Self::Saved { step, ranks } => {
                SampleStream::resized(sources, opts, ranks, *step).map(Some)
            }
        }
    }
}

/// Every rank's current data position, by rank, for rank 0's checkpoint (a collective: every
/// rank calls it at the same step).
pub(super) fn gather_positions(
    dist: &Dist,
    mine: &StreamState,
) -> Result<Vec<StreamState>, TrainError> {
    if dist.world_size == 1 {
        return Ok(vec![mine.clone()]);
    }
    let bytes = serde_json::to_vec(mine).expect("a stream state serializes");
    dist.all_gather_bytes(&bytes)?
        .iter()
        .enumerate()
        .map(|(rank, b)| {
            serde_json::from_slice(b).map_err(|e| {
                TrainError::Setup(format!("rank {rank} sent an unreadable data position: {e}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_that_may_change_on_resume_are_the_ones_configs_readme_explains() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/README.md"),
        )
        .unwrap();
        let table = readme
            .split("| may change on resume | why |")
            .nth(1)
            .expect("configs/README.md has the may-change-on-resume table");
        let mut documented: Vec<String> = Vec::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let keys = row.split('|').nth(1).unwrap();
            for key in keys.split('`').skip(1).step_by(2) {
                // `[eval]` stands for the whole section, as "eval." does in the const.
                let key = match key.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
                    Some(section) => format!("{section}."),
                    None => key.to_string(),
                };
                documented.push(key);
            }
        }
        let mut code: Vec<String> = MAY_CHANGE_ON_RESUME.iter().map(|k| k.to_string()).collect();
        documented.sort();
        code.sort();
        assert_eq!(
            documented, code,
            "configs/README.md's table and MAY_CHANGE_ON_RESUME"
        );
    }

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
                ema: None,
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

//! The preflight: everything a run decides before its first allocation, and every reason it
//! would refuse to start, computed once.
//!
//! [`RunPlan::new`] is what `cliptrain train` runs first ([`super::Trainer::build`] starts from
//! its plan) and all that `cliptrain config check` runs, so the check refuses exactly what
//! training would before its first step. It opens `model.init_from` (its header, not its
//! weights), loads the tokenizer, parses the shard specs and the `[eval]` sets, and reads the
//! checkpoint a resume continues, but allocates no model and starts no loader. Checks that do
//! not depend on each other all run, so one report lists every problem.
use super::{Resume, TrainError, budget, input, resume};
use crate::checkpoint::RunLock;
use crate::config::{Config, DeviceSpec};
use crate::data::mixture::TrainShards;
use crate::dist::{Dist, DistEnv, DistError};
use crate::eval::Evaluator;
use crate::interop::{self, ModelSource};
use crate::model::ModelSpec;
use crate::text::TextTokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tch::Device;

/// What a run will be, decided before anything is allocated.
pub struct RunPlan {
    /// The config the run uses: `model.init_from`'s dimensions, tokenizer and normalisation
    /// applied, and this rank's device and thread counts.
    pub cfg: Config,
    /// `run.device`, resolved (`auto`) and checked against this host, once for the whole run.
    pub device: Device,
    /// Where this process sits in a multi-process job; `None` for a job of one process.
    pub ranks: Option<DistEnv>,
    /// The tokenizer, checked against the model's vocabulary and pooling.
    pub tokenizer: Arc<TextTokenizer>,
    /// The model's dimensions (what `model::ClipModel::new` will build).
    pub spec: ModelSpec,
    /// What the run will hold in host memory, by the keys that set it: (keys, bytes).
    pub memory: Vec<(&'static str, f64)>,
    /// The bytes the shuffle buffer may fill once running.
    pub shuffle_buffer_bytes: u64,
    /// The checkpoint the run continues, per `--resume`.
    pub resume_from: Option<PathBuf>,
    /// `model.init_from`, opened, for a fresh run to load.
    pub(super) init: Option<ModelSource>,
    pub(super) sources: TrainShards,
    pub(super) evaluator: Option<Evaluator>,
    /// Class-labelled data's captions (`data.classnames`, `data.templates`).
    pub(super) class_captions: Option<crate::data::sample::ClassCaptions>,
}

/// Every reason a run would not start, one per independent check.
#[derive(Debug, thiserror::Error)]
#[error("{} start-up problems:\n{}", .0.len(), list(.0))]
pub struct Refusals(pub Vec<TrainError>);

fn list(errors: &[TrainError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
    lines.join("\n")
}

impl RunPlan {
    /// The plan for `cfg` (loaded and validated) started with `resume`, or every start-up
    /// refusal: one is returned as itself, several as [`TrainError::Refused`].
    pub fn new(cfg: &Config, resume: &Resume) -> Result<Self, TrainError> {
        let mut no = Vec::new();
        let plan = Self::collect(cfg, resume, &mut no);
        match (plan, no.len()) {
            (Some(plan), 0) => Ok(plan),
            (_, 1) => Err(no.pop().expect("one refusal")),
            _ => Err(TrainError::Refused(Refusals(no))),
        }
    }

    /// Runs every check, pushing each refusal to `no`; a plan only when all passed.
    fn collect(cfg: &Config, resume: &Resume, no: &mut Vec<TrainError>) -> Option<Self> {
        // A config loaded from TOML was validated by the loader; one built in code is here.
        let rules = crate::config::validate(cfg);
        if !rules.is_empty() {
            no.push(TrainError::Setup(format!(
                "the config is invalid:\n  {}",
                rules.join("\n  ")
            )));
            return None;
        }
        let device = keep(no, budget::check_device(cfg));
        let ranks = keep(no, DistEnv::from_env().map_err(TrainError::from)).flatten();
        let (mut cfg, init) = keep(no, interop::prepare(cfg).map_err(TrainError::from))
            .unwrap_or_else(|| (cfg.clone(), None));
        let device = match &ranks {
            Some(env) => keep(no, rank_view(&mut cfg, env)),
            None => device,
        };
        let host = device.unwrap_or(Device::Cpu);
        keep(no, budget::fit_to_host(&mut cfg, host));
        let main = ranks.as_ref().is_none_or(|r| r.rank == 0);
        let run_dir = cfg.run.output_dir.join(&cfg.run.name);
        keep(no, writable(&cfg.run.output_dir, &run_dir));
        if main {
            keep(no, RunLock::check_free(&run_dir).map_err(TrainError::from));
        }
        let resume_from = keep(no, resume::choose(&run_dir, resume)).flatten();
        // The state is checked against this config only when the config may continue it.
        let continues = resume_from
            .as_ref()
            .filter(|dir| keep(no, resume::check_config(dir, &cfg)).is_some());
        let missing = missing_files(&cfg);
        let absent = |prefix: &str| missing.iter().any(|(key, _)| key.starts_with(prefix));
        let (no_tokenizer, no_eval) = (absent("data.tokenizer"), absent("eval."));
        if !missing.is_empty() {
            let lines: Vec<String> = missing.iter().map(|(_, line)| line.clone()).collect();
            no.push(TrainError::Setup(format!(
                "the config names files that do not exist:\n  {}",
                lines.join("\n  ")
            )));
        }
        let tokenizer = (!no_tokenizer)
            .then(|| keep(no, input::load_tokenizer(&cfg)))
            .flatten();
        let sources = keep(no, input::sources_of(&cfg));
        let class_captions = keep(no, input::class_captions(&cfg));
        if let (Some(dir), Some(sources)) = (continues, &sources) {
            keep(no, resume::check_state(dir, &cfg, sources));
        }
        let evaluator = (!no_eval)
            .then(|| keep(no, Evaluator::from_config(&cfg).map_err(TrainError::from)))
            .flatten();
        let tokenizer = Arc::new(tokenizer?);
        let spec = cfg.model.spec(tokenizer.eot_id() as i64, cfg.loss.kind);
        Some(Self {
            memory: budget::estimate(&cfg, host),
            shuffle_buffer_bytes: budget::shuffle_buffer_bytes(&cfg, host),
            device: device?,
            sources: sources?,
            evaluator: evaluator?,
            class_captions: class_captions?,
            cfg,
            ranks,
            tokenizer,
            spec,
            resume_from,
            init,
        })
    }

    /// The run folder, `run.output_dir/run.name`.
    pub fn run_dir(&self) -> PathBuf {
        self.cfg.run.output_dir.join(&self.cfg.run.name)
    }

    /// Joins the job the plan's ranks describe (a job of one process without them).
    pub fn join(&self) -> Result<Dist, DistError> {
        let Some(env) = &self.ranks else {
            return Ok(Dist::single());
        };
        let timeout = Duration::from_secs(self.cfg.dist.timeout_s);
        let dist = Dist::join(env, self.device, timeout)?;
        if dist.is_main() {
            tracing::info!(
                "process group of {} ranks joined ({} per node), {} pairs per rank",
                dist.world_size,
                dist.local_world_size,
                self.cfg.optim.batch_size / dist.world_size
            );
        }
        Ok(dist)
    }

    /// One line per decision, for `config check` and the start of a run's log.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("device: {:?}", self.device)];
        if let Some(r) = &self.ranks {
            lines.push(format!(
                "rank {} of {} ({} on this node), {} pairs per rank",
                r.rank,
                r.world_size,
                r.local_world_size,
                self.cfg.optim.batch_size / r.world_size
            ));
        }
        lines.push(format!(
            "threads: {} (run.threads), decode workers: {} (data.workers; 0 = run.threads)",
            self.cfg.run.threads, self.cfg.data.workers
        ));
        lines.push(format!(
            "tokenizer: {} ({} ids, end token {})",
            self.cfg.data.tokenizer,
            self.tokenizer.vocab_size(),
            self.tokenizer.eot_id()
        ));
        lines.push(format!(
            "model: {:?}, {:.1} M parameters",
            self.spec.kind,
            self.spec.param_count() / 1e6
        ));
        for (keys, bytes) in &self.memory {
            lines.push(format!(
                "host memory for {keys}: {:.1} MiB",
                bytes / 1048576.0
            ));
        }
        match &self.resume_from {
            Some(dir) => lines.push(format!("resumes from {}", dir.display())),
            None => lines.push(format!(
                "starts a fresh run in {}",
                self.run_dir().display()
            )),
        }
        lines
    }
}

/// The files `cfg` names and a run reads that are not there, as (key, line). Shard specs are not among them:
/// they may be `pipe:` commands or patterns, and `data.strict` decides about missing shards.
fn missing_files(cfg: &Config) -> Vec<(&'static str, String)> {
    // The class names, templates and subset are read only for `eval.zeroshot`.
    let zeroshot = !cfg.eval.zeroshot.is_empty();
    [
        ("data.tokenizer", &cfg.data.tokenizer, true),
        ("eval.classnames", &cfg.eval.classnames, zeroshot),
        ("eval.templates", &cfg.eval.templates, zeroshot),
        ("eval.classes_subset", &cfg.eval.classes_subset, zeroshot),
        ("eval.suite", &cfg.eval.suite, true),
    ]
    .into_iter()
    .filter(|(_, _, read)| *read)
    .map(|(key, path, _)| (key, path))
    .filter(|(_, path)| {
        !path.is_empty()
            && !path.starts_with(crate::eval::prompts::BUILTIN_PREFIX)
            && !Path::new(path).is_file()
    })
    .map(|(key, path)| (key, format!("{key} = {path:?}: no such file")))
    .collect()
}

/// `result`'s value, or `None` with its error pushed to `no`.
fn keep<T>(no: &mut Vec<TrainError>, result: Result<T, TrainError>) -> Option<T> {
    result.map_err(|e| no.push(e)).ok()
}

/// This rank's view of `cfg` in the job `env` describes: on a GPU rank i takes
/// `cuda:LOCAL_RANK`, and `run.threads = 0` ("all cores") shares the node's cores among its
/// ranks instead of oversubscribing them. The global batch must split evenly over the ranks.
fn rank_view(cfg: &mut Config, env: &DistEnv) -> Result<Device, TrainError> {
    if cfg.run.device.resolve().is_cuda() {
        cfg.run.device = DeviceSpec::Cuda(env.local_rank);
    }
    if cfg.run.threads == 0 {
        cfg.run.threads = (crate::runtime::cores() / env.local_world_size).max(1);
    }
    if cfg.optim.batch_size % env.world_size != 0 {
        return Err(TrainError::Setup(format!(
            "optim.batch_size = {} must be divisible by the number of processes ({}): it is the \
             global contrastive batch, split evenly over ranks",
            cfg.optim.batch_size, env.world_size
        )));
    }
    budget::check_device(cfg)
}

/// Whether a file can be written in `run_dir`, without creating it: probed in the nearest
/// folder that exists, naming the path when not (`run.output_dir` a file, or read-only).
fn writable(output_dir: &Path, run_dir: &Path) -> Result<(), TrainError> {
    let refuse = |what: String| {
        TrainError::Setup(format!(
            "run.output_dir = {}: {what}; choose a folder this user can write",
            output_dir.display()
        ))
    };
    let mut existing = run_dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(refuse(format!(
            "cannot write in {}: {} is not a folder",
            run_dir.display(),
            existing.display()
        )));
    }
    // Named per process: ranks of one job check the same folder at the same moment, and one
    // rank's `remove_file` must not find the other's probe gone.
    let probe = existing.join(format!(".cliptrain-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| refuse(format!("cannot write in {}: {e}", run_dir.display())))
}

//! The typed run configuration: one struct per TOML section, every field defaulted.
//!
//! `configs/reference.toml` documents each field and is checked against `Config::default()` by a
//! test, so the documentation cannot drift from the code. Loading (files, `extends`, `--set`)
//! lives in [`load()`], the rules a loaded config must satisfy in [`validate()`].
mod choices;
mod data;
mod load;
mod validate;

pub use choices::{
    CaptionChoice, DataMode, DeviceSpec, LogitScaleMode, LossKind, Precision, Progress, Schedule,
};
pub use data::{DataConfig, MixtureEntry};
pub use load::{ConfigError, Origin, load, load_str};
pub use validate::validate;
// The model's own types: the TOML sections deserialize straight into what the towers take.
pub use crate::model::{
    Activation, LoraConfig, LoraTarget, LoraTower, ModelKind, TextConfig, TextPooling, VisionConfig,
};

pub use crate::data::augment::AugmentConfig;
pub use crate::data::resize::{ImageResize, Interpolation, ResizeRule};
use crate::model::{LogitHead, ModelSpec};
pub use crate::text::TextClean;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole run: what to train, on what, how, and where results go.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    pub checkpoint: CheckpointConfig,
    pub log: LogConfig,
    pub dist: DistConfig,
    pub finetune: FinetuneConfig,
}

/// `[run]`: identity, reproducibility and hardware.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Folder name of this run under `output_dir`.
    pub name: String,
    /// Seeds parameter init, data order and augmentation.
    pub seed: u64,
    /// Where run folders (checkpoints, TensorBoard events, metrics) are written.
    pub output_dir: PathBuf,
    pub device: DeviceSpec,
    /// libtorch intra-op threads and default decode threads; 0 = all cores.
    pub threads: usize,
    pub precision: Precision,
    /// fp16 only: the dynamic loss scale a fresh run starts from (GradScaler's `init_scale`);
    /// a resumed run continues from the checkpoint's scale.
    pub loss_scale: f64,
    /// fp16 only: good steps in a row after which the loss scale doubles.
    pub loss_scale_growth_interval: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "clip".into(),
            seed: 0,
            output_dir: PathBuf::from("checkpoints"),
            device: DeviceSpec::Auto,
            threads: 0,
            precision: Precision::Fp32,
            loss_scale: 65536.0,
            loss_scale_growth_interval: 2000,
        }
    }
}

/// `[model]`: the two towers and the shared embedding. Defaults are CLIP ViT-B/32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The architecture: `"clip"` (HF `CLIPModel`) or `"siglip"` (HF `SiglipModel`: no class
    /// token, attention-pooled vision, bidirectional text pooled at the last position, a
    /// `logit_bias`; trains with `loss.kind = "siglip"`, `embed_dim` = `vision.width`).
    pub kind: ModelKind,
    /// Dimension of the joint image-text embedding space.
    pub embed_dim: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// Start from these weights instead of a random init: a cliptrain checkpoint or run
    /// folder, a Hugging Face CLIP folder, or an OpenCLIP folder (see `source`). Empty = random.
    /// HF and OpenCLIP folders (and checkpoints) also set the model's dimensions.
    pub init_from: String,
    /// With `false`, tensors of `init_from` that are missing or mis-shaped are listed and left
    /// at their random init instead of stopping the run.
    pub init_strict: bool,
    /// Activation checkpointing: in training, recompute each encoder layer in the backward pass
    /// instead of keeping its activations (less memory, about a third more compute, the same
    /// gradients). A run choice, not part of the architecture: not exported, may change on
    /// resume.
    pub grad_checkpointing: bool,
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// Which grid and context keys the config wrote (set by [`load()`]; not a TOML key).
    #[serde(skip)]
    pub written: WrittenDims,
}

/// Which of `model.vision.image_size`, `model.vision.patch_size` and
/// `model.text.context_length` a config wrote: in its file, a file it `extends`, or a `--set`.
///
/// With `model.init_from` the source decides the model's dimensions, except that a written
/// `image_size` or `context_length` that differs from the source's is kept, and the source's
/// position embeddings are resampled (image) or truncated (text) to fit it; a written
/// `patch_size` must equal the source's. A config built in code writes none. Where a value came
/// from is not part of the config's value: this field never makes two configs unequal, and it
/// is not saved.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrittenDims {
    pub image_size: bool,
    pub patch_size: bool,
    pub context_length: bool,
}

impl PartialEq for WrittenDims {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ModelConfig {
    /// The model this section describes, pooling text at `eot_id` (the tokenizer's end-of-text
    /// id), with the logit head `loss` trains.
    pub fn spec(&self, eot_id: i64, loss: LossKind) -> ModelSpec {
        ModelSpec {
            kind: self.kind,
            embed_dim: self.embed_dim,
            activation: self.activation,
            layer_norm_eps: self.layer_norm_eps,
            vision: self.vision.clone(),
            text: self.text.clone(),
            eot_id,
            head: loss.into(),
        }
    }

    /// This section with its architecture and dimensions (kind, towers, embedding, activation,
    /// eps) replaced by
    /// `spec`'s, except a written `vision.image_size` and `text.context_length` (see
    /// [`WrittenDims`]); `init_from`, `init_strict` and the training choice
    /// `vision.patch_dropout` are kept.
    pub fn with_dims_of(&self, spec: &ModelSpec) -> Self {
        let mut vision = VisionConfig {
            patch_dropout: self.vision.patch_dropout,
            ..spec.vision.clone()
        };
        if self.written.image_size {
            vision.image_size = self.vision.image_size;
        }
        let mut text = spec.text.clone();
        if self.written.context_length {
            text.context_length = self.text.context_length;
        }
        Self {
            kind: spec.kind,
            embed_dim: spec.embed_dim,
            activation: spec.activation,
            layer_norm_eps: spec.layer_norm_eps,
            vision,
            text,
            ..self.clone()
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Clip,
            embed_dim: 512,
            activation: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            init_from: String::new(),
            init_strict: true,
            grad_checkpointing: false,
            vision: VisionConfig::default(),
            text: TextConfig::default(),
            written: WrittenDims::default(),
        }
    }
}

/// `[loss]`: the contrastive objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub kind: LossKind,
    /// Upper bound of `exp(logit_scale)`; CLIP clamps at 100.
    pub max_logit_scale: f64,
    /// With class-labelled data (`data.classnames`): leave pairs of different samples of one
    /// class out of the loss, rather than push them apart as negatives.
    pub mask_same_class: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::InfoNce,
            max_logit_scale: 100.0,
            mask_same_class: false,
        }
    }
}

impl From<LossKind> for LogitHead {
    fn from(loss: LossKind) -> Self {
        match loss {
            LossKind::InfoNce => LogitHead::Clip,
            LossKind::Siglip => LogitHead::Siglip,
        }
    }
}

impl From<LogitHead> for LossKind {
    fn from(head: LogitHead) -> Self {
        match head {
            LogitHead::Clip => LossKind::InfoNce,
            LogitHead::Siglip => LossKind::Siglip,
        }
    }
}

/// `[optim]`: batch, AdamW and the learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Optimizer steps in the whole run (the schedule spans them).
    pub steps: u64,
    /// Contrastive batch: every image is contrasted with every caption in it.
    pub batch_size: usize,
    /// Pairs encoded at once; smaller than `batch_size` enables feature caching. 0 = `batch_size`.
    pub micro_batch_size: usize,
    pub lr: f64,
    /// Floor the cosine schedule decays to.
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    /// Final linear decay to `min_lr` for `schedule = "constant-cooldown"`.
    pub cooldown_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm; 0 = no clipping.
    pub grad_clip_norm: f64,
    /// Consecutive non-finite steps tolerated (each is skipped) before stopping; checked when
    /// metrics are logged, at checkpoints and at the last step (the step never waits for it).
    pub max_bad_steps: u32,
    /// Run AdamW in ATen's fused multi-tensor kernel (`torch.optim.AdamW(fused=True)`); `false`
    /// selects the per-tensor reference kernel. Same math and saved state; results differ only
    /// in float rounding.
    pub fused: bool,
    /// Keep an exponential moving average of the weights with this decay per step (e.g.
    /// 0.999), saved in checkpoints (`ema.safetensors`) and evaluated beside the weights; 0 =
    /// off.
    pub ema_decay: f64,
    /// Ramp the EMA's decay up from 0.1 as `min(ema_decay, (1 + step) / (10 + step))`.
    pub ema_warmup: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        // OpenCLIP's ViT defaults (lr 5e-4, betas 0.9/0.98, eps 1e-6, wd 0.2).
        Self {
            steps: 1000,
            batch_size: 256,
            micro_batch_size: 0,
            lr: 5e-4,
            min_lr: 0.0,
            warmup_steps: 100,
            schedule: Schedule::Cosine,
            cooldown_steps: 0,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
            grad_clip_norm: 0.0,
            max_bad_steps: 10,
            fused: true,
            ema_decay: 0.0,
            ema_warmup: false,
        }
    }
}

/// `[eval]`: evaluation sets run during training and by `cliptrain eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps; 0 = only at the end of training.
    pub every: u64,
    /// Zero-shot classification set: shards with `.cls` labels, an ImageFolder directory, or a
    /// CLIP_benchmark folder (its `test` split).
    pub zeroshot: String,
    /// One class name per line, or `builtin:NAME`; required with `zeroshot` unless it is a
    /// CLIP_benchmark folder with its own `classnames.txt`.
    pub classnames: String,
    /// One template per line with `{}` (or `{c}`) for the class name, or `builtin:NAME`; empty =
    /// the CLIP_benchmark folder's templates, else our generic ones.
    pub templates: String,
    /// Class names (one per line) reported as a separate "seen" group.
    pub classes_subset: String,
    /// Captioned shards (or a CLIP_benchmark retrieval folder) for image-text retrieval recall.
    pub retrieval: String,
    /// An evaluation suite file (`cliptrain eval suite`), run at every evaluation; its figures
    /// are logged as `suite/<task>/<metric>`.
    pub suite: String,
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 0,
            zeroshot: String::new(),
            classnames: String::new(),
            templates: String::new(),
            classes_subset: String::new(),
            retrieval: String::new(),
            suite: String::new(),
            batch_size: 256,
        }
    }
}

/// `[checkpoint]`: when checkpoints are written and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and always at the end); 0 = only at the end.
    pub every: u64,
    /// Also write one when this many minutes of wall-clock time have passed since the last
    /// (on a cluster, steps take however long the hardware and data make them; jobs get
    /// preempted by the hour). 0 = off. Rank 0's clock decides for every rank.
    pub every_minutes: f64,
    /// Newest checkpoints kept; older ones are pruned. 0 = keep all.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 1000,
            every_minutes: 0.0,
            keep: 3,
        }
    }
}

/// `[log]`: metrics to TensorBoard, `metrics.jsonl` and the terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log metrics every this many steps.
    pub every: u64,
    /// Write TensorBoard event files under the run folder.
    pub tensorboard: bool,
    pub progress: Progress,
    /// Each rank appends the keys of its samples of every step to
    /// `sample_keys.rank<R>.jsonl` in the run folder (to audit what a run has seen).
    pub sample_keys: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            tensorboard: true,
            progress: Progress::Auto,
            sample_keys: false,
        }
    }
}

/// `[dist]`: multi-process data-parallel training (started by torchrun or `cliptrain launch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// Seconds a rank waits for the others (joining, any collective) before failing the job.
    pub timeout_s: u64,
    /// Back-propagate the loss through every rank's features (an all-reduce of the feature
    /// gradients); only changes the gradients together with `local_loss`.
    pub gather_with_grad: bool,
    /// Each rank computes the loss of its own pairs against the global batch (less memory and
    /// compute per rank); exact with `gather_with_grad`, approximate without.
    pub local_loss: bool,
    /// Size of the flat buffers gradients are averaged in, in MiB.
    pub bucket_mb: usize,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            timeout_s: 600,
            gather_with_grad: false,
            local_loss: false,
            bucket_mb: 25,
        }
    }
}

/// `[finetune]`: which parts train and how fast, for fine-tuning from `model.init_from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Freeze the image tower (and its projection): LiT's locked-image tuning.
    pub lock_image: bool,
    /// With `lock_image`, keep the last N vision blocks, the post-LayerNorm and the projection
    /// trainable.
    pub unlocked_image_layers: usize,
    /// Freeze the text tower (and its projection).
    pub lock_text: bool,
    /// With `lock_text`, keep the last N text blocks, the final LayerNorm and the projection
    /// trainable.
    pub unlocked_text_layers: usize,
    /// Learning-rate multiplier of the image tower (vision_model.*, visual_projection).
    pub image_lr_scale: f64,
    /// Learning-rate multiplier of the text tower (text_model.*, text_projection).
    pub text_lr_scale: f64,
    /// Layer-wise LR decay of the image tower: block i of L gets `decay^(L - i)`, the
    /// embeddings `decay^(L + 1)`, the head 1. 1.0 = off.
    pub image_layer_decay: f64,
    /// The same for the text tower (its blocks, token and position embeddings, and the final
    /// LayerNorm + projection as the head). 1.0 = off.
    pub text_layer_decay: f64,
    pub logit_scale: LogitScaleMode,
    /// `[finetune.lora]`: low-rank adapters instead of training the towers' weights; absent =
    /// off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            lock_image: false,
            unlocked_image_layers: 0,
            lock_text: false,
            unlocked_text_layers: 0,
            image_lr_scale: 1.0,
            text_lr_scale: 1.0,
            image_layer_decay: 1.0,
            text_layer_decay: 1.0,
            logit_scale: LogitScaleMode::Train,
            lora: None,
        }
    }
}

impl Config {
    /// Loads the TOML file at `path`, following its `extends` chain, applies `overrides`
    /// (`section.key=value`, as `--set` takes them) and validates the result: every problem is
    /// reported at once, each naming its file and key.
    pub fn load(path: impl AsRef<Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        load::load(path.as_ref(), overrides)
    }

    /// As [`Config::load`] for TOML text (`extends` resolves against the working directory).
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        load::load_str(text, overrides)
    }

    /// The effective config as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serializes to TOML")
    }
}

/// Every leaf of a config section as `key.sub` → its TOML value text (nested tables joined with
/// `.`, as `--set` spells keys), for comparing two configs key by key.
pub fn flat_keys<T: Serialize>(section: &T) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    let value = toml::Value::try_from(section).expect("config sections convert to TOML");
    walk("", value, &mut out);
    out
}

//! The one-word choices of a config (`run.device`, `run.precision`, `data.mode`, `loss.kind`,
//! `optim.schedule`, `log.progress`, `finetune.logit_scale`, `data.caption_choice`), each with its TOML spelling.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which caption of a sample with several a training step reads (`data.caption_choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionChoice {
    /// The text member (or the JSON field), as a sample with one caption has.
    First,
    /// One of all of them, drawn per sample and epoch from (`run.seed`, the sample's position):
    /// the text member and the numbered ones (`KEY.txt`, `KEY.1.txt`, ...), or the items of a
    /// JSON list in `data.json_caption_field`.
    Random,
}

/// What happens to the loaded temperature `logit_scale` when fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogitScaleMode {
    /// Keep the loaded value and train it.
    Train,
    /// Keep the loaded value fixed.
    Freeze,
    /// Start again from the loss's initial value (ln 1/0.07, or ln 10 for SigLIP) and train it.
    Reset,
}

/// Where tensors live: `"auto"` picks CUDA device 0 when available, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// The concrete libtorch device; `auto` resolves by what this host has.
    pub fn resolve(self) -> tch::Device {
        match self {
            DeviceSpec::Auto => tch::Device::cuda_if_available(),
            DeviceSpec::Cpu => tch::Device::Cpu,
            DeviceSpec::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    format!(
                        "\"{s}\" is not a device; use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
                    )
                }),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Numeric precision of the forward/backward pass; weights and optimizer state stay fp32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bf16 autocast (CUDA; also runs on CPU).
    Bf16,
    /// fp16 autocast with dynamic loss scaling (`run.loss_scale`). Runs on the CPU too, slowly:
    /// its use there is testing the CUDA path.
    Fp16,
}

impl Precision {
    /// What evaluation and embedding run in when not told: bf16 autocast on CUDA (as OpenCLIP's
    /// `--precision amp_bf16` evaluations), fp32 on the CPU, where bf16 is slower.
    pub fn inference_default(device: tch::Device) -> Self {
        if device.is_cuda() {
            Self::Bf16
        } else {
            Self::Fp32
        }
    }
}

/// How shards are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    /// Each shard once per epoch, shard order shuffled per epoch.
    Epoch,
    /// Shards drawn with replacement (OpenCLIP's `--dataset-resampled`).
    Resampled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Symmetric InfoNCE over the batch (CLIP).
    InfoNce,
    /// Pairwise sigmoid loss with a learnable bias (SigLIP).
    Siglip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warmup, then cosine decay to `min_lr`.
    Cosine,
    /// Linear warmup, then constant.
    Constant,
    /// Linear warmup, constant, then linear decay to `min_lr` over `cooldown_steps`.
    ConstantCooldown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    /// A progress bar on a terminal, plain log lines otherwise.
    Auto,
    Bar,
    Plain,
}

//! `cliptrain merge`: WiSE-FT weight interpolation of two models into export folders, one per α.
use anyhow::Context;
use clap::{Args, ValueEnum};
use cliptrain::interop::merge::WeightMerge;
use cliptrain::interop::{self, LoadedModel};
use std::path::{Path, PathBuf};
use tch::Device;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The two models, first A (usually the zero-shot model) then B (its fine-tuned copy):
    /// checkpoint, run, Hugging Face or OpenCLIP folders, weights files or hf: ids.
    #[arg(long, num_args = 1, required = true)]
    pub checkpoint: Vec<PathBuf>,
    /// The weight of B: (1 − α)·A + α·B, each in [0, 1]. Several (`0,0.25,0.5,0.75,1`) write
    /// one folder each, OUT/alpha-0.25, ..., for `eval suite --checkpoint OUT/alpha-*`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub alpha: Vec<f64>,
    /// The folder to write (with several α, the folder of their folders).
    #[arg(long)]
    pub out: PathBuf,
    /// The folder layout written: Hugging Face or OpenCLIP (as `cliptrain export`).
    #[arg(long, value_enum, default_value_t = MergeFormat::Hf)]
    pub format: MergeFormat,
    /// Replace the files of an earlier export in the folders written.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MergeFormat {
    Hf,
    Openclip,
}

pub fn run(a: MergeArgs) -> anyhow::Result<()> {
    let [first, second] = &a.checkpoint[..] else {
        anyhow::bail!(
            "merge takes exactly two --checkpoint (A, then B), got {}",
            a.checkpoint.len()
        );
    };
    if let Some(bad) = a.alpha.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        anyhow::bail!(
            "--alpha {bad} must be in [0, 1] (0 = the first --checkpoint, 1 = the second)"
        );
    }
    let mut seen = a.alpha.clone();
    seen.sort_by(f64::total_cmp);
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!("--alpha lists {} twice; each value writes one folder", w[0]);
    }
    let open = |p: &Path| {
        LoadedModel::open(p, Device::Cpu).with_context(|| format!("reading model {}", p.display()))
    };
    let (model_a, model_b) = (open(first)?, open(second)?);
    warn_on_other_inputs(&model_a, &model_b);
    let merge = WeightMerge::new(&model_a, &model_b)?;
    let stop = super::signal::stop_token();
    for &alpha in &a.alpha {
        let out = match a.alpha.len() {
            1 => a.out.clone(),
            _ => a.out.join(format!("alpha-{alpha}")),
        };
        merge.apply(alpha, &model_a)?;
        let stopped = || stop.is_stopped();
        let files = match a.format {
            MergeFormat::Hf => interop::hf::export(&model_a, &out, a.force, &stopped)?,
            MergeFormat::Openclip => interop::openclip::export(&model_a, &out, a.force, &stopped)?,
        };
        tracing::info!(
            "alpha = {alpha}: {} files in {}",
            files.len(),
            out.display()
        );
        println!("{}", out.display());
    }
    Ok(())
}

/// The merged folders take A's tokenizer and image preprocessing; say so when B's differ.
fn warn_on_other_inputs(a: &LoadedModel, b: &LoadedModel) {
    let (sa, sb) = (&a.source, &b.source);
    let bytes = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
    if bytes(&sa.tokenizer_path) != bytes(&sb.tokenizer_path) {
        tracing::warn!(
            "the two models' tokenizers differ ({:?} and {:?}); the merged folders get the first's",
            sa.tokenizer_path,
            sb.tokenizer_path
        );
    }
    if sa.image_mean_std != sb.image_mean_std || sa.image_resize != sb.image_resize {
        tracing::warn!(
            "the two models preprocess images differently; the merged folders state the first's"
        );
    }
}

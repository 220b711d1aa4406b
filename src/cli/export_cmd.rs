//! `cliptrain export hf|openclip|peft`: a model (usually a checkpoint) as a folder other tools
//! load; a LoRA checkpoint merged into plain weights (hf, openclip) or as its adapters (peft).
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::interop::{self, LoadedModel};
use std::path::PathBuf;
use tch::Device;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A Hugging Face folder: config.json, model.safetensors, tokenizer and preprocessor files,
    /// for `CLIPModel.from_pretrained` and `CLIPProcessor.from_pretrained`.
    Hf(ExportArgs),
    /// An OpenCLIP folder: open_clip_config.json + open_clip_model.safetensors (+ tokenizer),
    /// for `open_clip.create_model_and_transforms('local-dir:DIR')`.
    Openclip(ExportArgs),
    /// A LoRA checkpoint's adapters as a Hugging Face PEFT folder (adapter_config.json +
    /// adapter_model.safetensors) for its base model (the run's model.init_from), for
    /// `PeftModel.from_pretrained(CLIPModel.from_pretrained(BASE), DIR)`. hf and openclip
    /// export the same checkpoint with the adapters merged into the weights.
    Peft(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The model: a checkpoint folder, a run folder (its newest checkpoint), a Hugging Face
    /// CLIP folder or an OpenCLIP folder (or one weights file in it: FOLDER/epoch_3.pt), or a
    /// model on the Hugging Face Hub: hf:ORG/NAME[@REVISION] (fetched into the HF cache;
    /// HF_HUB_OFFLINE=1: the cache only).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The folder to write (created if missing). Files of the export already in it are
    /// refused, by name, unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the files of an earlier export in --out.
    #[arg(long)]
    pub force: bool,
    /// Export a checkpoint's moving average of the weights (`ema.safetensors`, trained with
    /// optim.ema_decay) instead of its weights.
    #[arg(long)]
    pub ema: bool,
}

pub fn run(cmd: ExportCommand) -> anyhow::Result<()> {
    let (args, files) = match cmd {
        ExportCommand::Hf(a) => {
            let saved = open(&a)?;
            let files = interop::hf::export(&saved, &a.out, a.force, &stop_requested())?;
            (a, files)
        }
        ExportCommand::Openclip(a) => {
            let saved = open(&a)?;
            let files = interop::openclip::export(&saved, &a.out, a.force, &stop_requested())?;
            (a, files)
        }
        ExportCommand::Peft(a) => {
            let what = || format!("reading model {}", a.checkpoint.display());
            let mut source = interop::ModelSource::open(&a.checkpoint).with_context(what)?;
            if a.ema {
                source = source.with_ema_weights().with_context(what)?;
            }
            let files = interop::peft::export(&source, &a.out, a.force, &stop_requested())?;
            (a, files)
        }
    };
    for f in files {
        println!("{}", args.out.join(f).display());
    }
    Ok(())
}

/// From here on SIGINT/SIGTERM stop the export once the file being written is done, and it
/// removes what it staged. Installed after the model is open, so a signal still ends a Hub
/// download or a slow load at once (nothing is written by then).
fn stop_requested() -> impl Fn() -> bool {
    let stop = super::signal::stop_token();
    move || stop.is_stopped()
}

fn open(a: &ExportArgs) -> anyhow::Result<LoadedModel> {
    let saved = LoadedModel::open_weights(&a.checkpoint, Device::Cpu, a.ema)
        .with_context(|| format!("reading model {}", a.checkpoint.display()))?;
    if saved.source.tokenizer.is_none() {
        tracing::warn!(
            "{} has no tokenizer.json; the export will have no tokenizer files",
            saved.source.dir.display()
        );
    }
    Ok(saved)
}

//! `cliptrain embed` (images or texts to an index file) and `cliptrain search` (a text query
//! against an index).
use anyhow::{Context, bail};
use clap::Args;
use cliptrain::embed::{Embedder, Index};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The model: a checkpoint folder, a run folder (its newest checkpoint), a Hugging Face
    /// CLIP folder or an OpenCLIP folder (or one weights file in it: FOLDER/epoch_3.pt), or a
    /// model on the Hugging Face Hub: hf:ORG/NAME[@REVISION] (fetched into the HF cache;
    /// HF_HUB_OFFLINE=1: the cache only).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// WebDataset shards whose images to embed (keys are the sample keys).
    #[arg(long, conflicts_with = "texts", required_unless_present = "texts")]
    pub images: Option<String>,
    /// A text file, one text per line (keys are the texts; empty lines are skipped).
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// The index to write: safetensors with `embeddings` and the keys in its metadata.
    #[arg(long)]
    pub out: PathBuf,
    /// Images (or texts) encoded at once; at least 1.
    #[arg(long, default_value_t = 64, value_parser = super::batch_size_arg)]
    pub batch_size: usize,
    /// "auto", "cpu", "cuda" or "cuda:N".
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Embed with a checkpoint's moving average of the weights (`ema.safetensors`, trained
    /// with optim.ema_decay) instead of its weights.
    #[arg(long)]
    pub ema: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// An index written by `cliptrain embed`.
    #[arg(long)]
    pub index: PathBuf,
    /// The text to look for.
    #[arg(long)]
    pub query: String,
    /// How many matches to print.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Encode the query with this model (any kind `embed` takes) instead of the one the index
    /// records.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let enc = Embedder::open(
        &args.checkpoint,
        super::device_arg(&args.device)?,
        args.batch_size,
        args.ema,
    )
    .with_context(|| format!("loading model {}", args.checkpoint.display()))?;
    let (keys, embeddings, kind) = if let Some(spec) = &args.images {
        let (keys, emb, skipped) = enc.shards(spec)?;
        if skipped.total() > 0 {
            eprintln!("skipped samples: {skipped}");
        }
        (keys, emb, "images")
    } else {
        let path = args
            .texts
            .as_ref()
            .expect("clap requires --images or --texts");
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --texts {}", path.display()))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if lines.is_empty() {
            bail!(
                "{} has no text to embed (one text per line)",
                path.display()
            );
        }
        let emb = enc.texts(&lines)?;
        (lines, emb, "texts")
    };
    if keys.is_empty() {
        bail!("nothing to embed: no usable {kind} found");
    }
    let index = Index {
        keys,
        embeddings,
        kind: kind.into(),
        checkpoint: enc.loaded.source.dir.clone(),
    };
    index.save(&args.out)?;
    println!(
        "{} {kind} embedded ({} dims) into {}",
        index.keys.len(),
        index.embeddings.size()[1],
        args.out.display()
    );
    Ok(())
}

pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    let index = Index::load(&args.index)?;
    let ckpt = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| index.checkpoint.clone());
    let enc =
        Embedder::open(&ckpt, super::device_arg(&args.device)?, 1, false).with_context(|| {
            format!(
                "loading model {} to encode the query (pass --checkpoint if it moved)",
                ckpt.display()
            )
        })?;
    let q = enc.texts(std::slice::from_ref(&args.query))?;
    // `Index::load` checked that the index is [keys, D]; the query must be D wide too.
    let (dims, width) = (q.size()[1], index.embeddings.size()[1]);
    if dims != width {
        bail!(
            "{} embeds into {dims} dims but tensor `embeddings` of {} is {width} wide; use the \
             model that wrote it (--checkpoint)",
            ckpt.display(),
            args.index.display()
        );
    }
    for (rank, (key, score)) in index.top_k(&q.get(0), args.k).into_iter().enumerate() {
        println!("{:>3}  {score:.4}  {key}", rank + 1);
    }
    Ok(())
}

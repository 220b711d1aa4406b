//! `cliptrain data score`: the CLIP score of every sample of a shard set — the cosine of its
//! image's and its caption's embeddings under one model (DataComp's and LAION's filter).
//!
//! Output, in one folder:
//! - `score.json`: what the folder holds: the model, the shard spec, the shards, the format.
//! - Per shard, `NNNNNN.jsonl`: one JSON object per usable sample, `{"key", "shard", "score"}`
//!   in stream order. JSON Lines rather than Parquet: every tool reads it (pandas, DuckDB, jq),
//!   it needs no new dependency, and the scores are small next to the images.
//! - With `--embeddings`, `NNNNNN.safetensors` beside it: the `[N, D]` L2-normalised image
//!   embeddings row by row, with the keys in the metadata (the format `embed` writes, so
//!   `search` and dedup can use them).
//!
//! Shard `NNNNNN` is the shard's place in the spec. Each shard's files are written under a
//! temporary name and renamed once complete, so a killed run leaves only whole shards, and a
//! rerun with the same `--out` continues with the shards that are missing. `--part i/n` takes
//! the shards whose place is `i` modulo `n`: n processes (or machines) cover the set once.
use crate::data::SkipCounts;
use crate::data::spec::parse_spec;
use crate::embed::{EmbedError, Index};
use crate::eval::batches::{EvalBatches, Want};
use crate::eval::{Encoder, eval_images};
use crate::interop::LoadedModel;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const FORMAT: &str = "cliptrain-scores-1";

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("shard {shard}: {source}")]
    Shard {
        shard: String,
        source: crate::eval::EvalError,
    },
    #[error("{}: {reason}", path.display())]
    Out { path: PathBuf, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ScoreError {
    let path = path.to_path_buf();
    move |source| ScoreError::Io { op, path, source }
}

/// Which shards this process scores: those whose place in the spec is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl Part {
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// `i/n` with `0 <= i < n`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("--part {text:?}: write i/n with 0 <= i < n (e.g. 0/4 .. 3/4)");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

/// What one `score` run did.
#[derive(Debug, Default)]
pub struct ScoreSummary {
    /// Shards in the spec.
    pub shards_in_spec: usize,
    /// Shards scored now, and samples in them.
    pub shards_scored: usize,
    pub samples: usize,
    /// Shards of this part already complete in the folder (a resumed run).
    pub shards_done_before: usize,
    pub skipped: SkipCounts,
}

/// Scores the samples of the shards `spec` with `loaded` (its evaluation preprocessing) into
/// `out`, `batch_size` samples at a time; `part` chooses the shards, `embeddings` also keeps
/// the image embeddings. The caption scored is the sample's first (its text member, as
/// training reads it by default).
pub fn score_shards(
    loaded: &LoadedModel,
    spec: &str,
    out: &Path,
    part: Part,
    embeddings: bool,
    batch_size: usize,
) -> Result<ScoreSummary, ScoreError> {
    let shards = parse_spec(spec)?;
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let checkpoint = loaded
        .source
        .dir
        .canonicalize()
        .unwrap_or_else(|_| loaded.source.dir.clone());
    let urls: Vec<String> = shards.iter().map(|s| s.url()).collect();
    claim_folder(out, &checkpoint, spec, &urls)?;
    let cfg = loaded.source.config();
    let prep = eval_images(&cfg, batch_size, crate::runtime::cores());
    let encoder = Encoder::with_text(
        &loaded.model,
        loaded.tokenizer().map_err(|e| e.to_string()),
        loaded.vs.device(),
        None,
        batch_size,
    );
    // A model that cannot encode text fails here, before any shard is read.
    encoder.text_tokenizer().map_err(EmbedError::Eval)?;
    let pixels = prep.pixel_norm(encoder.device());
    let mut summary = ScoreSummary {
        shards_in_spec: urls.len(),
        ..ScoreSummary::default()
    };
    for (place, url) in urls.iter().enumerate() {
        if place % part.count != part.index {
            continue;
        }
        let scores_file = out.join(format!("{place:06}.jsonl"));
        if scores_file.is_file()
            && (!embeddings || out.join(format!("{place:06}.safetensors")).is_file())
        {
            summary.shards_done_before += 1;
            continue;
        }
        let in_shard = |source| ScoreError::Shard {
            shard: url.clone(),
            source,
        };
        let mut batches = EvalBatches::open(url, Want::Captions, &prep, &[], encoder.tokenizer())
            .map_err(in_shard)?;
        let (mut lines, mut keys, mut parts) = (String::new(), Vec::new(), Vec::new());
        while let Some(b) = batches.next_batch().map_err(in_shard)? {
            let image = encoder.images(&b.images, &pixels).map_err(in_shard)?;
            let first: Vec<String> = b.captions.iter().map(|c| c[0].clone()).collect();
            let text = encoder.texts(&first).map_err(in_shard)?;
            let cosine = (&image * &text).sum_dim_intlist(1, false, Kind::Float);
            let cosine =
                Vec::<f32>::try_from(cosine.to_device(Device::Cpu)).expect("a float vector");
            for (key, s) in b.keys.iter().zip(&cosine) {
                let row = serde_json::json!({"key": key, "shard": url, "score": s});
                lines.push_str(&row.to_string());
                lines.push('\n');
            }
            if embeddings {
                parts.push(image.to_device(Device::Cpu));
            }
            keys.extend(b.keys);
        }
        for (reason, n) in &batches.skipped().0 {
            *summary.skipped.0.entry(*reason).or_default() += n;
        }
        if embeddings {
            let dim = loaded.source.spec.embed_dim as i64;
            let emb = match parts.is_empty() {
                true => Tensor::zeros([0, dim], (Kind::Float, Device::Cpu)),
                false => Tensor::cat(&parts, 0),
            };
            let index = Index {
                keys: keys.clone(),
                embeddings: emb,
                kind: "images".into(),
                checkpoint: checkpoint.clone(),
            };
            let path = out.join(format!("{place:06}.safetensors"));
            let tmp = out.join(format!(".{place:06}.safetensors.tmp"));
            index.save(&tmp)?;
            std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
        }
        // The scores last: their presence says the shard is complete.
        let tmp = out.join(format!(".{place:06}.jsonl.tmp"));
        std::fs::write(&tmp, &lines).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &scores_file).map_err(io("renaming", &tmp))?;
        summary.shards_scored += 1;
        summary.samples += keys.len();
    }
    Ok(summary)
}

/// Writes `score.json` in a new folder, or checks that the folder's is this model's and this
/// spec's: scores of two models (or two sets) in one folder would be read as one table.
fn claim_folder(
    out: &Path,
    checkpoint: &Path,
    spec: &str,
    urls: &[String],
) -> Result<(), ScoreError> {
    let path = out.join("score.json");
    let want = serde_json::json!({
        "format": FORMAT,
        "checkpoint": checkpoint.display().to_string(),
        "spec": spec,
        "shards": urls,
    });
    if !path.is_file() {
        let tmp = out.join(".score.json.tmp");
        let text = serde_json::to_string_pretty(&want).expect("JSON values serialize");
        std::fs::write(&tmp, text + "\n").map_err(io("writing", &tmp))?;
        return std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp));
    }
    let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
    let have: serde_json::Value = serde_json::from_str(&text).map_err(|e| ScoreError::Out {
        path: path.clone(),
        reason: format!("not valid JSON ({e}); remove the folder or choose another --out"),
    })?;
    for key in ["format", "checkpoint", "spec"] {
        if have.get(key) != want.get(key) {
            return Err(ScoreError::Out {
                path: path.clone(),
                reason: format!(
                    "the folder holds scores with {key} {}, this run's is {}: choose another \
                     --out (or remove the folder to start again)",
                    have.get(key).unwrap_or(&serde_json::Value::Null),
                    want[key]
                ),
            });
        }
    }
    Ok(())
}

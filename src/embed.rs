//! Embeddings for applications: encode images (WebDataset shards) or texts with a model
//! into an index file, and search such an index with a text query.
//!
//! An index is one safetensors file: `embeddings` (`[N, D]` f32, L2-normalised) and, in the
//! file's metadata, `keys` (a JSON array, the sample keys or the texts, row by row), `kind`
//! (`images` or `texts`), `checkpoint` (the absolute model folder that encoded it — a
//! checkpoint, or a Hugging Face or OpenCLIP folder — so a search can encode its query with the
//! same model) and `format` (`cliptrain-index-1`).
use crate::data::SkipCounts;
use crate::eval::batches::{EvalBatches, Want};
use crate::eval::{Encoder, EvalError, eval_images};
use crate::interop::{LoadedModel, SourceError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const FORMAT: &str = "cliptrain-index-1";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
}

/// A model and its tokenizer (none needed for images), encoding for an index.
pub struct Embedder {
    pub loaded: LoadedModel,
    /// The tokenizer, or why there is none (images need none).
    tokenizer: Result<std::sync::Arc<crate::text::TextTokenizer>, String>,
    batch_size: usize,
}

impl Embedder {
    /// Loads the model at `path` (a checkpoint or run folder, a Hugging Face or an OpenCLIP
    /// folder) onto `device`; with `ema`, a checkpoint's moving average of the weights.
    pub fn open(
        path: &Path,
        device: Device,
        batch_size: usize,
        ema: bool,
    ) -> Result<Self, EmbedError> {
        let loaded = LoadedModel::open_weights(path, device, ema)?;
        Ok(Self {
            tokenizer: loaded.tokenizer().map_err(|e| e.to_string()),
            loaded,
            batch_size: batch_size.max(1),
        })
    }

    fn encoder(&self) -> Encoder<'_> {
        Encoder::with_text(
            &self.loaded.model,
            self.tokenizer.clone(),
            self.loaded.vs.device(),
            None,
            self.batch_size,
        )
    }

    /// `[N, D]` L2-normalised text embeddings, on the CPU.
    pub fn texts(&self, texts: &[String]) -> Result<Tensor, EmbedError> {
        Ok(self.encoder().texts(texts)?.to_device(Device::Cpu))
    }

    /// Every image of the shards `spec` (read once, in order) through the evaluation pipeline:
    /// CLIP's eval transform (resize the shorter side, center crop) and the model's
    /// normalisation. Samples need only an image. Returns the sample keys, their embeddings and
    /// what was skipped (samples and shards).
    pub fn shards(&self, spec: &str) -> Result<(Vec<String>, Tensor, SkipCounts), EmbedError> {
        let cfg = self.loaded.source.config();
        let workers = crate::runtime::cores();
        let prep = eval_images(&cfg, self.batch_size, workers);
        let encoder = self.encoder();
        let mut batches = EvalBatches::open(spec, Want::Images, &prep, &[], encoder.tokenizer())?;
        let (mut keys, mut parts) = (Vec::new(), Vec::new());
        let pixels = prep.pixel_norm(encoder.device());
        while let Some(b) = batches.next_batch()? {
            parts.push(encoder.images(&b.images, &pixels)?.to_device(Device::Cpu));
            keys.extend(b.keys);
        }
        let embeddings = if parts.is_empty() {
            let dim = self.loaded.source.spec.embed_dim as i64;
            Tensor::zeros([0, dim], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&parts, 0)
        };
        Ok((keys, embeddings, batches.skipped().clone()))
    }
}

/// The `embeddings` tensor of an index file as [`Index::top_k`] can use it: `[keys, D]` with
/// D >= 1, float (half and double precision are converted to f32). The file is not trusted: a
/// 1-D, integer or mis-sized tensor is refused here, naming the tensor, before any matmul.
fn checked_embeddings(t: Tensor, keys: usize) -> Result<Tensor, String> {
    let shape = t.size();
    let rewrite = "write the index again with `cliptrain embed`";
    if shape.len() != 2 {
        return Err(format!(
            "tensor `embeddings` has shape {shape:?}; an index holds one row per key, [N, D]; \
             {rewrite}"
        ));
    }
    if shape[0] != keys as i64 {
        return Err(format!(
            "tensor `embeddings` has {} rows but the metadata lists {keys} keys; {rewrite}",
            shape[0]
        ));
    }
    if shape[1] < 1 {
        return Err(format!(
            "tensor `embeddings` has shape {shape:?}, rows of no value; {rewrite}"
        ));
    }
    match t.kind() {
        Kind::Float => Ok(t),
        Kind::Half | Kind::BFloat16 | Kind::Double => Ok(t.to_kind(Kind::Float)),
        other => Err(format!(
            "tensor `embeddings` is {other:?}; an index holds float embeddings (f32, or f16, \
             bf16, f64); {rewrite}"
        )),
    }
}

/// An embedding index in memory.
pub struct Index {
    pub keys: Vec<String>,
    /// `[N, D]`, L2-normalised.
    pub embeddings: Tensor,
    /// `images` or `texts`.
    pub kind: String,
    /// The model folder that encoded it.
    pub checkpoint: PathBuf,
}

impl Index {
    /// Writes the index as described in the module docs.
    pub fn save(&self, path: &Path) -> Result<(), EmbedError> {
        let err = |reason: String| EmbedError::Index {
            path: path.to_path_buf(),
            reason,
        };
        let emb = self.embeddings.to_kind(Kind::Float).contiguous();
        let shape: Vec<usize> = emb.size().iter().map(|&d| d as usize).collect();
        let mut bytes = vec![0u8; emb.numel() * 4];
        emb.copy_data_u8(&mut bytes, emb.numel());
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
            .map_err(|e| err(format!("{e:?}")))?;
        let checkpoint = self
            .checkpoint
            .canonicalize()
            .unwrap_or_else(|_| self.checkpoint.clone());
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("kind", self.kind.clone()),
            ("checkpoint", checkpoint.display().to_string()),
            (
                "keys",
                serde_json::to_string(&self.keys).expect("strings serialize"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::tensor::serialize_to_file([("embeddings", view)], &Some(meta), path)
            .map_err(|e| err(format!("cannot write: {e:?}")))
    }

    /// Reads an index written by [`Index::save`].
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let err = |reason: String| EmbedError::Index {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("not a safetensors file: {e:?}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(format!(
                "not a cliptrain index (metadata format is not {FORMAT}); write one with `cliptrain embed`"
            )));
        }
        let keys: Vec<String> = serde_json::from_str(meta.get("keys").map_or("", |s| s))
            .map_err(|e| err(format!("bad `keys` metadata: {e}")))?;
        let embeddings = Tensor::read_safetensors(path)
            .map_err(|e| err(e.to_string()))?
            .into_iter()
            .find(|(n, _)| n == "embeddings")
            .map(|(_, t)| t)
            .ok_or_else(|| err("no `embeddings` tensor".into()))?;
        let embeddings = checked_embeddings(embeddings, keys.len()).map_err(err)?;
        Ok(Self {
            keys,
            embeddings,
            kind: meta.get("kind").cloned().unwrap_or_default(),
            checkpoint: PathBuf::from(meta.get("checkpoint").cloned().unwrap_or_default()),
        })
    }

    /// The `k` best (key, cosine similarity) for a normalised `[D]` query, best first.
    pub fn top_k(&self, query: &Tensor, k: usize) -> Vec<(String, f64)> {
        let n = self.keys.len();
        if n == 0 {
            return vec![];
        }
        let scores = self
            .embeddings
            .matmul(&query.to_kind(Kind::Float).view([-1]));
        let (vals, idx) = scores.topk(k.min(n) as i64, 0, true, true);
        let vals: Vec<f64> = Vec::<f64>::try_from(&vals.to_kind(Kind::Double)).unwrap_or_default();
        let idx: Vec<i64> = Vec::<i64>::try_from(&idx).unwrap_or_default();
        idx.into_iter()
            .zip(vals)
            .map(|(i, v)| (self.keys[i as usize].clone(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index file whose `embeddings` tensor is `dtype` of `shape` (zero bytes), for `keys`.
    fn index_file(dir: &Path, dtype: safetensors::Dtype, shape: &[usize], keys: usize) -> PathBuf {
        let bytes = vec![0u8; shape.iter().product::<usize>() * dtype.size()];
        let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &bytes).unwrap();
        let keys: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
        let meta: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("keys".to_string(), serde_json::to_string(&keys).unwrap()),
        ]
        .into();
        let path = dir.join(format!("{dtype:?}-{shape:?}.safetensors"));
        safetensors::tensor::serialize_to_file([("embeddings", view)], &Some(meta), &path).unwrap();
        path
    }

    #[test]
    fn an_index_of_the_wrong_rank_dtype_or_rows_is_refused_naming_file_and_tensor() {
        use safetensors::Dtype;
        let dir = tempfile::tempdir().unwrap();
        for (dtype, shape, keys, says) in [
            (Dtype::F32, vec![3], 3, "has shape [3]"),
            (Dtype::F32, vec![3, 2, 1], 3, "has shape [3, 2, 1]"),
            (Dtype::I64, vec![3, 2], 3, "is Int64"),
            (Dtype::U8, vec![3, 2], 3, "is Uint8"),
            (
                Dtype::F32,
                vec![2, 4],
                3,
                "has 2 rows but the metadata lists 3 keys",
            ),
            (Dtype::F32, vec![3, 0], 3, "rows of no value"),
        ] {
            let path = index_file(dir.path(), dtype, &shape, keys);
            let e = Index::load(&path).err().expect("refused").to_string();
            assert!(
                e.starts_with(&path.display().to_string())
                    && e.contains("tensor `embeddings`")
                    && e.contains(says),
                "{dtype:?} {shape:?}: {e}"
            );
        }
        for dtype in [Dtype::F16, Dtype::BF16, Dtype::F64] {
            let path = index_file(dir.path(), dtype, &[3, 2], 3);
            let index = Index::load(&path).unwrap();
            assert_eq!(index.embeddings.kind(), Kind::Float);
            let q = Tensor::ones([2], (Kind::Float, Device::Cpu));
            assert_eq!(index.top_k(&q, 2).len(), 2);
        }
    }
}

//! Embeddings for applications: encode images (WebDataset shards) or texts with a checkpoint
//! into an index file, and search such an index with a text query.
//!
//! An index is one safetensors file: `embeddings` (`[N, D]` f32, L2-normalised) and, in the
//! file's metadata, `keys` (a JSON array, the sample keys or the texts, row by row), `kind`
//! (`images` or `texts`), `checkpoint` (the absolute checkpoint folder that encoded it, so a
//! search can encode its query with the same model) and `format` (`cliptrain-index-1`).
use crate::config::Precision;
use crate::data::SkipCounts;
use crate::data::loader::SampleKeys;
use crate::data::spec::parse_spec;
use crate::data::stream::{Order, ShardStream, StreamOptions};
use crate::data::transform::{Augment, ImageTransform};
use crate::eval::{Encoder, EvalError, LoadedModel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const FORMAT: &str = "cliptrain-index-1";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
}

/// A checkpoint's model and tokenizer, encoding for an index.
pub struct Embedder {
    pub loaded: LoadedModel,
    device: Device,
    batch_size: usize,
}

impl Embedder {
    /// Loads the checkpoint (or run folder's newest checkpoint) at `checkpoint` onto `device`.
    pub fn open(checkpoint: &Path, device: Device, batch_size: usize) -> Result<Self, EmbedError> {
        Ok(Self {
            loaded: LoadedModel::load(checkpoint, device)?,
            device,
            batch_size: batch_size.max(1),
        })
    }

    fn encoder(&self) -> Encoder<'_> {
        Encoder {
            model: &self.loaded.model,
            tokenizer: self.loaded.tokenizer.clone(),
            device: self.device,
            precision: Precision::Fp32,
            batch_size: self.batch_size,
        }
    }

    /// `[N, D]` L2-normalised text embeddings, on the CPU.
    pub fn texts(&self, texts: &[String]) -> Result<Tensor, EmbedError> {
        Ok(self.encoder().texts(texts)?.to_device(Device::Cpu))
    }

    /// Every image of the shards `spec` (read once, in order), CLIP's eval transform (resize the
    /// shorter side, center crop) and the checkpoint's normalisation. Returns the sample keys,
    /// their embeddings and what was skipped. Samples need only an image (no caption or label,
    /// which the evaluation loader requires), so images are read here, on this thread.
    pub fn shards(&self, spec: &str) -> Result<(Vec<String>, Tensor, SkipCounts), EmbedError> {
        let cfg = &self.loaded.config;
        let (batch, encoder) = (self.batch_size, self.encoder());
        let keys = SampleKeys::from_config(&cfg.data);
        let opts = StreamOptions {
            order: Order::Once,
            shuffle_buffer: 0,
            seed: 0,
            rank: 0,
            world_size: 1,
        };
        let mut stream = ShardStream::new(parse_spec(spec)?, opts)?;
        let size = cfg.model.vision.image_size as u32;
        let transform = ImageTransform {
            size,
            augment: Augment::Eval,
            max_pixels: cfg.data.max_image_pixels,
            seed: 0,
        };
        let (mean, std) = (cfg.data.image_mean, cfg.data.image_std);
        let mut resizer = fast_image_resize::Resizer::new();
        let (mut names, mut pixels) = (Vec::new(), Vec::new());
        let mut out: Vec<Result<Tensor, EvalError>> = Vec::new();
        let mut skipped = SkipCounts::default();
        let flush = |pixels: &mut Vec<u8>, out: &mut Vec<Result<Tensor, EvalError>>| {
            if pixels.is_empty() {
                return;
            }
            let s = size as i64;
            let n = pixels.len() as i64 / (3 * s * s);
            let x = Tensor::from_slice(pixels.as_slice())
                .view([n, s, s, 3])
                .permute([0, 3, 1, 2])
                .to_kind(Kind::Float)
                / 255.0;
            let m = Tensor::from_slice(&mean.map(|v| v as f32)).view([1, 3, 1, 1]);
            let sd = Tensor::from_slice(&std.map(|v| v as f32)).view([1, 3, 1, 1]);
            out.push(
                encoder
                    .images(&((x - m) / sd))
                    .map(|e| e.to_device(Device::Cpu)),
            );
            pixels.clear();
        };
        while let Some(sample) = stream.next_sample()? {
            let bytes = keys.image.iter().find_map(|k| sample.raw.member(k));
            let rgb = match bytes {
                None => Err(crate::data::SkipReason::MissingImage),
                Some(b) => transform.apply(b, sample.index, &mut resizer),
            };
            match rgb {
                Ok(rgb) => {
                    pixels.extend_from_slice(&rgb);
                    names.push(sample.raw.key.clone());
                }
                Err(reason) => skipped.add(reason),
            }
            if names.len() % batch == 0 {
                flush(&mut pixels, &mut out);
            }
        }
        flush(&mut pixels, &mut out);
        let parts = out.into_iter().collect::<Result<Vec<_>, _>>()?;
        let dim = cfg.model.embed_dim as i64;
        let embeddings = if parts.is_empty() {
            Tensor::zeros([0, dim], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&parts, 0)
        };
        Ok((names, embeddings, skipped))
    }
}

/// An embedding index in memory.
pub struct Index {
    pub keys: Vec<String>,
    /// `[N, D]`, L2-normalised.
    pub embeddings: Tensor,
    /// `images` or `texts`.
    pub kind: String,
    /// The checkpoint folder that encoded it.
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
        if embeddings.size().first().copied() != Some(keys.len() as i64) {
            return Err(err(format!(
                "{} keys for embeddings of shape {:?}",
                keys.len(),
                embeddings.size()
            )));
        }
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

//! Embeddings for applications: encode images (WebDataset shards) or texts with a checkpoint
//! into an index file, and search such an index with a text query.
//!
//! An index is one safetensors file: `embeddings` (`[N, D]` f32, L2-normalised) and, in the
//! file's metadata, `keys` (a JSON array, the sample keys or the texts, row by row), `kind`
//! (`images` or `texts`), `checkpoint` (the absolute checkpoint folder that encoded it, so a
//! search can encode its query with the same model) and `format` (`cliptrain-index-1`).
use crate::data::SkipCounts;
use crate::data::loader::SampleKeys;
use crate::data::spec::parse_spec;
use crate::data::stream::{Order, ShardStream, StreamOptions};
use crate::data::transform::{Augment, ImageTransform};
use crate::interop::{InteropError, SavedModel};
use crate::model::ClipModel;
use crate::text::TextTokenizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const FORMAT: &str = "cliptrain-index-1";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Interop(#[from] InteropError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("{0}")]
    Input(String),
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
}

/// An encoder: a checkpoint's model and tokenizer, in inference mode.
pub struct Encoder {
    pub saved: SavedModel,
    model: ClipModel,
    _vs: tch::nn::VarStore,
    device: Device,
}

impl Encoder {
    pub fn open(checkpoint: &Path, device: Device) -> Result<Self, EmbedError> {
        let saved = SavedModel::open(checkpoint)?;
        let (vs, model) = saved.build(device)?;
        Ok(Self {
            saved,
            model,
            _vs: vs,
            device,
        })
    }

    fn tokenizer(&self) -> Result<&TextTokenizer, EmbedError> {
        self.saved.tokenizer.as_ref().ok_or_else(|| {
            EmbedError::Input(format!(
                "{} has no tokenizer.json to encode texts with",
                self.saved.dir.display()
            ))
        })
    }

    /// `[N, D]` L2-normalised text embeddings, on the CPU.
    pub fn texts(&self, texts: &[&str], batch: usize) -> Result<Tensor, EmbedError> {
        let tok = self.tokenizer()?;
        let ctx = tok.context_length() as i64;
        let mut out = Vec::new();
        for chunk in texts.chunks(batch.max(1)) {
            let ids = tok
                .encode_batch(chunk)
                .map_err(|e| EmbedError::Input(e.to_string()))?;
            let ids = Tensor::from_slice(&ids)
                .view([chunk.len() as i64, ctx])
                .to_device(self.device);
            out.push(tch::no_grad(|| normalize(&self.model.encode_text(&ids))));
        }
        Ok(cat_cpu(out, self.dim()))
    }

    /// `[N, D]` L2-normalised embeddings of normalised `[N, 3, S, S]` images, on the CPU.
    pub fn images(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| normalize(&self.model.encode_image(&images.to_device(self.device))))
            .to_device(Device::Cpu)
    }

    fn dim(&self) -> i64 {
        self.saved.config.model.embed_dim as i64
    }

    /// Every image of the shards `spec` (read once, in order), CLIP's eval transform (resize the
    /// shorter side, center crop) and the checkpoint's normalisation. Returns the sample keys,
    /// their embeddings and what was skipped.
    pub fn shards(
        &self,
        spec: &str,
        batch: usize,
    ) -> Result<(Vec<String>, Tensor, SkipCounts), EmbedError> {
        let cfg = &self.saved.config;
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
        let (mut names, mut pixels, mut out) = (Vec::new(), Vec::new(), Vec::new());
        let mut skipped = SkipCounts::default();
        let flush = |pixels: &mut Vec<u8>, out: &mut Vec<Tensor>| {
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
            out.push(self.images(&((x - m) / sd)));
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
            if names.len() % batch.max(1) == 0 {
                flush(&mut pixels, &mut out);
            }
        }
        flush(&mut pixels, &mut out);
        Ok((names, cat_cpu(out, self.dim()), skipped))
    }
}

fn normalize(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    &x / x.norm_scalaropt_dim(2, [-1], true)
}

fn cat_cpu(parts: Vec<Tensor>, dim: i64) -> Tensor {
    if parts.is_empty() {
        return Tensor::zeros([0, dim], (Kind::Float, Device::Cpu));
    }
    Tensor::cat(&parts, 0).to_device(Device::Cpu).contiguous()
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

//! The training data of this rank: the tokenizer and the loader over its share of the stream,
//! its batches copied to the run's device one batch ahead.
use super::TrainError;
use crate::checkpoint::TrainState;
use crate::config::{Config, DataMode};
use crate::data::buffers::HostMemory;
use crate::data::device::DeviceBatches;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::sample::SampleKeys;
use crate::data::spec::{Shard, parse_spec};
use crate::data::stream::{Order, ShardStream, StreamOptions};
use crate::data::transform::{Augment, ImageTransform};
use crate::dist::Dist;
use crate::text::TextTokenizer;
use std::sync::Arc;

/// `data.tokenizer`, checked against the model's vocabulary.
pub(super) fn load_tokenizer(cfg: &Config) -> Result<TextTokenizer, TrainError> {
    let path = &cfg.data.tokenizer;
    if path.is_empty() {
        return Err(TrainError::Setup(
            "data.tokenizer is empty: training needs a tokenizer.json (train one with `cliptrain tokenizer train`)".into(),
        ));
    }
    let tok = TextTokenizer::from_file(path, cfg.model.text.context_length).map_err(|source| {
        TrainError::Tokenizer {
            path: path.clone(),
            source,
        }
    })?;
    if tok.vocab_size() > cfg.model.text.vocab_size {
        return Err(TrainError::Setup(format!(
            "data.tokenizer {path} has {} ids but model.text.vocab_size = {}; raise model.text.vocab_size to at least {}",
            tok.vocab_size(),
            cfg.model.text.vocab_size,
            tok.vocab_size()
        )));
    }
    Ok(tok)
}

/// This rank's batches (its share of the global batch) on the run's device, continuing from
/// `state.data` when the run has already taken steps.
pub(super) fn start_loader(
    cfg: &Config,
    tokenizer: Arc<TextTokenizer>,
    state: &TrainState,
    dist: &Dist,
) -> Result<DeviceBatches, TrainError> {
    let d = &cfg.data;
    if d.train.is_empty() {
        return Err(TrainError::Setup(
            "data.train is empty: name the training shards, e.g. data.train = \"data/synth/train-{000000..000007}.tar\"".into(),
        ));
    }
    let shards = parse_spec(&d.train)?;
    let order = match d.mode {
        DataMode::Epoch => Order::Epoch,
        DataMode::Resampled => Order::Resampled,
    };
    let stream_opts = StreamOptions {
        order,
        shuffle_buffer: d.shuffle_buffer,
        seed: cfg.run.seed,
        rank: dist.rank,
        world_size: dist.world_size,
    };
    if d.strict {
        missing_shards(&shards)?;
    }
    let stream = if state.step > 0 {
        ShardStream::restore(shards, stream_opts, &state.data)?
    } else {
        ShardStream::new(shards, stream_opts)?
    };
    let stream = stream.limit_buffer_bytes(super::budget::shuffle_buffer_bytes(cfg));
    let threads = crate::runtime::cpu_threads(cfg.run.threads, "run.threads");
    let device = cfg.run.device.resolve();
    let opts = LoaderOptions {
        // Each rank loads its share of the global contrastive batch.
        batch_size: cfg.optim.batch_size / dist.world_size,
        transform: ImageTransform {
            size: cfg.model.vision.image_size as u32,
            augment: Augment::Train {
                scale: d.crop_scale,
            },
            max_pixels: d.max_image_pixels,
            seed: cfg.run.seed,
        },
        keys: SampleKeys::from_config(d),
        workers: if d.workers > 0 {
            crate::runtime::cpu_threads(d.workers, "data.workers")
        } else {
            threads
        },
        prefetch: d.prefetch,
        memory: HostMemory::for_device(device),
    };
    let loader = Loader::start(stream, tokenizer, opts)?;
    Ok(DeviceBatches::new(loader, device))
}

/// `data.strict`: every shard file of `data.train` must exist (`pipe:` shards are not checked).
fn missing_shards(shards: &[Shard]) -> Result<(), TrainError> {
    let missing: Vec<&str> = shards
        .iter()
        .filter_map(|s| match s {
            Shard::File(p) if !std::path::Path::new(p).is_file() => Some(p.as_str()),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = missing.iter().take(5).copied().collect();
    Err(TrainError::Setup(format!(
        "data.strict = true and {} shard file(s) of data.train do not exist: {}{}; fix the spec \
         or set data.strict = false to skip them with a warning",
        missing.len(),
        shown.join(", "),
        if missing.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    )))
}

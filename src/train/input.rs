//! The training data of this rank: the tokenizer and the loader over its share of the stream,
//! its batches copied to the run's device one batch ahead.
use super::TrainError;
use super::plan::RunPlan;
use super::resume::StreamStart;
use crate::config::{Config, DataMode, TextPooling};
use crate::data::buffers::HostMemory;
use crate::data::device::DeviceBatches;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::mixture::{Component, SampleStream, TrainShards};
use crate::data::sample::SampleKeys;
use crate::data::spec::{Shard, parse_spec};
use crate::data::stream::{Order, StreamOptions, StreamState};
use crate::data::transform::ImageTransform;
use crate::dist::Dist;
use crate::text::TextTokenizer;

/// `data.tokenizer`, checked against the model's vocabulary.
pub(super) fn load_tokenizer(cfg: &Config) -> Result<TextTokenizer, TrainError> {
    let path = &cfg.data.tokenizer;
    if path.is_empty() {
        return Err(TrainError::Setup(
            "data.tokenizer is empty: training needs a tokenizer.json (train one with `cliptrain tokenizer train`)".into(),
        ));
    }
    let opts = cfg.data.tokenizer_options(cfg.model.text.context_length);
    let tok = TextTokenizer::load(path, &opts).map_err(|source| TrainError::Tokenizer {
        path: path.clone(),
        source,
    })?;
    if tok.vocab_size() > cfg.model.text.vocab_size {
        return Err(TrainError::Setup(format!(
            "data.tokenizer {path} has {} ids but model.text.vocab_size = {}; raise model.text.vocab_size to at least {}",
            tok.vocab_size(),
            cfg.model.text.vocab_size,
            tok.vocab_size()
        )));
    }
    // Argmax pooling finds the end token only when no id in a row is larger.
    let largest = tok.vocab_size().saturating_sub(1) as u32;
    if cfg.model.text.pooling == TextPooling::Argmax && tok.eot_id() != largest {
        return Err(TrainError::Setup(format!(
            "model.text.pooling = \"argmax\" pools at a row's largest id, but the end token of \
             data.tokenizer {path} is id {} of {}: text ids above it would be pooled instead; \
             use pooling = \"eot\"",
            tok.eot_id(),
            tok.vocab_size()
        )));
    }
    Ok(tok)
}

/// This rank's batches (its share of the global batch) on the run's device, its stream
/// opened at `start` (see [`super::resume::StreamStart`]). Returns the loader and the position its stream starts at.
pub(super) fn start_loader(
    plan: &RunPlan,
    start: &StreamStart,
    dist: &Dist,
) -> Result<(DeviceBatches, StreamState), TrainError> {
    let cfg = &plan.cfg;
    let d = &cfg.data;
    let stream_opts = stream_options(cfg, dist.rank, dist.world_size);
    let at = start.position(&plan.sources, &stream_opts)?;
    let stream = SampleStream::open(&plan.sources, stream_opts, at.as_ref())?
        .limit_buffer_bytes(plan.shuffle_buffer_bytes)
        .strict_sources(d.strict);
    let threads = crate::runtime::cpu_threads(cfg.run.threads, "run.threads");
    let opts = LoaderOptions {
        // Each rank loads its share of the global contrastive batch.
        batch_size: cfg.optim.batch_size / dist.world_size,
        transform: ImageTransform {
            size: cfg.model.vision.image_size as u32,
            augment: d.train_augment(),
            max_pixels: d.max_image_pixels,
            seed: cfg.run.seed,
        },
        keys: training_keys(d, plan.class_captions.clone()),
        workers: if d.workers > 0 {
            crate::runtime::cpu_threads(d.workers, "data.workers")
        } else {
            threads
        },
        prefetch: d.prefetch,
        memory: HostMemory::for_device(plan.device),
    };
    let loader = Loader::start(stream, plan.tokenizer.clone(), opts)?;
    Ok((
        DeviceBatches::new(loader, plan.device),
        at.unwrap_or_default(),
    ))
}

/// The training stream of rank `rank` of `world_size` that `cfg` describes.
pub(super) fn stream_options(cfg: &Config, rank: usize, world_size: usize) -> StreamOptions {
    StreamOptions {
        order: match cfg.data.mode {
            DataMode::Epoch => Order::Epoch,
            DataMode::Resampled => Order::Resampled,
        },
        shuffle_buffer: cfg.data.shuffle_buffer,
        seed: cfg.run.seed,
        rank,
        world_size,
    }
}

/// `data.train`, or the `[[data.sources]]` mixture, as shard lists (checked per `data.strict`).
pub(super) fn sources_of(cfg: &Config) -> Result<TrainShards, TrainError> {
    let d = &cfg.data;
    if !d.sources.is_empty() {
        let mut mixture = Vec::with_capacity(d.sources.len());
        for (i, s) in d.sources.iter().enumerate() {
            let shards = parse_spec(&s.train)?;
            if d.strict {
                missing_shards(&shards, &format!("data.sources[{i}].train"))?;
            }
            mixture.push(Component {
                name: s.name.clone(),
                shards,
                weight: s.weight,
            });
        }
        return Ok(TrainShards::Mixture(mixture));
    }
    if d.train.is_empty() {
        return Err(TrainError::Setup(
            "data.train is empty: name the training shards, e.g. data.train = \"data/synth/train-{000000..000007}.tar\" (or a [[data.sources]] mixture)".into(),
        ));
    }
    let shards = parse_spec(&d.train)?;
    if d.strict {
        missing_shards(&shards, "data.train")?;
    }
    Ok(TrainShards::Single(shards))
}

/// `data.strict`: every shard file of `key` must exist (`pipe:` shards are not checked).
fn missing_shards(shards: &[Shard], key: &str) -> Result<(), TrainError> {
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
        "data.strict = true and {} shard file(s) of {key} do not exist: {}{}; fix the spec \
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

/// The sample keys of training; class-labelled data reads the `.cls` label and makes the
/// caption from it.
fn training_keys(
    d: &crate::config::DataConfig,
    classes: Option<crate::data::sample::ClassCaptions>,
) -> SampleKeys {
    let mut keys = SampleKeys::from_config(d);
    if let Some(c) = classes {
        keys.label = true;
        keys.draw = crate::data::sample::CaptionDraw::Classes(c);
    }
    keys
}

/// `data.classnames` and `data.templates`, read, when the data is class-labelled.
pub(super) fn class_captions(
    cfg: &Config,
) -> Result<Option<crate::data::sample::ClassCaptions>, TrainError> {
    let d = &cfg.data;
    if d.classnames.is_empty() {
        return Ok(None);
    }
    let bad = |key: &str, e: crate::eval::EvalError| TrainError::Setup(format!("data.{key}: {e}"));
    let names =
        crate::eval::prompts::classnames(&d.classnames).map_err(|e| bad("classnames", e))?;
    let templates = match d.templates.as_str() {
        "" => crate::eval::zeroshot::DEFAULT_TEMPLATES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        spec => crate::eval::prompts::templates(spec).map_err(|e| bad("templates", e))?,
    };
    Ok(Some(crate::data::sample::ClassCaptions {
        names: std::sync::Arc::new(names),
        templates: std::sync::Arc::new(templates),
    }))
}

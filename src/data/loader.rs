//! The background pipeline: a producer thread pulls samples from the [`ShardStream`], decodes
//! and augments them in parallel on a rayon pool, tokenizes captions, assembles tensors and
//! queues finished batches, so the training loop only pops.
//!
//! A batch is exactly the next `batch_size` usable samples of the stream, and carries the stream
//! state right after them: saving that state with a checkpoint resumes at the next batch.
use super::stream::{ShardStream, StreamSample, StreamState};
use super::tarstream::RawSample;
use super::transform::ImageTransform;
use super::{DataError, SkipCounts, SkipReason};
use fast_image_resize::Resizer;
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;
use tch::{Kind, Tensor};

/// Caption → fixed-length token ids; implemented by the text module's tokenizer.
pub trait Tokenize: Send + Sync {
    fn context_length(&self) -> usize;
    /// Row-major `[captions.len(), context_length]` ids.
    fn encode(&self, captions: &[&str]) -> Result<Vec<i64>, String>;
}

/// Which members of a sample hold the image, caption and label.
#[derive(Debug, Clone)]
pub struct SampleKeys {
    /// Tried in order; the first present is the image.
    pub image: Vec<String>,
    pub text: String,
    /// When set, the caption is this field of the `json` member.
    pub json_caption_field: Option<String>,
    /// Read an integer `.cls` label (evaluation sets).
    pub label: bool,
}

impl SampleKeys {
    /// From `data.image_keys` (`;`-separated), `data.text_key`, `data.json_caption_field`.
    pub fn from_config(d: &crate::config::DataConfig) -> Self {
        Self {
            image: d
                .image_keys
                .split(';')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            text: d.text_key.trim().to_ascii_lowercase(),
            json_caption_field: Some(d.json_caption_field.clone()).filter(|f| !f.is_empty()),
            label: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub transform: ImageTransform,
    pub keys: SampleKeys,
    /// Decode threads.
    pub workers: usize,
    /// Batches queued ahead.
    pub prefetch: usize,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// A training or evaluation batch, on the CPU.
pub struct Batch {
    /// `[B, 3, S, S]` float32, normalised.
    pub images: Tensor,
    /// `[B, context_length]` int64.
    pub tokens: Tensor,
    pub captions: Vec<String>,
    pub keys: Vec<String>,
    /// `.cls` labels when `SampleKeys::label` is set.
    pub labels: Option<Vec<i64>>,
    /// Stream state after this batch: resuming from it yields the next batch.
    pub state: StreamState,
    /// Skipped samples and shard problems by reason, cumulative over the run.
    pub skipped: SkipCounts,
}

type Msg = Result<Option<Batch>, DataError>;

pub struct Loader {
    rx: Option<Receiver<Msg>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    ended: bool,
}

impl Loader {
    /// Starts the producer thread.
    pub fn start(
        stream: ShardStream,
        tokenizer: Arc<dyn Tokenize>,
        opts: LoaderOptions,
    ) -> Result<Self, DataError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.workers.max(1))
            .thread_name(|i| format!("cliptrain-decode-{i}"))
            .build()
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cliptrain-loader".into())
            .spawn(move || {
                Producer {
                    stream,
                    tokenizer,
                    opts,
                    pool,
                    skipped: SkipCounts::default(),
                    produced: 0,
                }
                .run(tx, stop2)
            })
            .map_err(|e| DataError::Loader(e.to_string()))?;
        Ok(Self {
            rx: Some(rx),
            stop,
            handle: Some(handle),
            ended: false,
        })
    }

    /// The next batch; `Ok(None)` when a single-pass stream is over. Blocks until one is ready.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        if self.ended {
            return Ok(None);
        }
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        match rx.recv() {
            Ok(Ok(Some(b))) => Ok(Some(b)),
            Ok(Ok(None)) => {
                self.ended = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(_) => {
                self.ended = true;
                Err(DataError::Loader(
                    "the producer thread exited without a message (it may have panicked)".into(),
                ))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.rx.take()); // a producer blocked on a full queue sees the hang-up
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Producer {
    stream: ShardStream,
    tokenizer: Arc<dyn Tokenize>,
    opts: LoaderOptions,
    pool: rayon::ThreadPool,
    /// Sample-level skips (the stream counts shard-level ones).
    skipped: SkipCounts,
    /// Usable samples batched so far.
    produced: u64,
}

/// A decoded sample ready for batching.
struct Prepared {
    pixels: Vec<u8>,
    caption: String,
    label: Option<i64>,
    key: String,
}

impl Producer {
    fn run(mut self, tx: SyncSender<Msg>, stop: Arc<AtomicBool>) {
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let msg = self.next_batch();
            let last = !matches!(msg, Ok(Some(_)));
            // Send, but give up when the consumer has gone away or asked us to stop.
            let mut pending = msg;
            loop {
                match tx.try_send(pending) {
                    Ok(()) => break,
                    Err(TrySendError::Disconnected(_)) => return,
                    Err(TrySendError::Full(m)) => {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        pending = m;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
            if last {
                return;
            }
        }
    }

    fn next_batch(&mut self) -> Msg {
        let b = self.opts.batch_size;
        let mut good: Vec<Prepared> = Vec::with_capacity(b);
        let mut bad_reads: HashSet<(u64, u64)> = HashSet::new();
        let mut exhausted = false;
        while good.len() < b && !exhausted {
            let mut raw: Vec<StreamSample> = Vec::with_capacity(b - good.len());
            while raw.len() < b - good.len() {
                match self.stream.next_sample()? {
                    Some(s) => raw.push(s),
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            let (opts, transform) = (&self.opts, &self.opts.transform);
            let results: Vec<(Result<Prepared, SkipReason>, (u64, u64))> =
                self.pool.install(|| {
                    raw.into_par_iter()
                        .map_init(Resizer::new, |rs, s| {
                            (
                                prepare(&s, opts, transform, rs),
                                (s.pos.epoch, s.pos.cursor),
                            )
                        })
                        .collect()
                });
            for (r, read) in results {
                match r {
                    Ok(p) => {
                        good.push(p);
                        bad_reads.clear();
                    }
                    Err(reason) => {
                        self.skipped.add(reason);
                        bad_reads.insert(read);
                    }
                }
            }
            if bad_reads.len() as u64 > self.stream.patience() {
                return Err(DataError::AllBad {
                    shards: bad_reads.len() as u64,
                    what: "every sample read was unusable".into(),
                    skipped: self.total_skipped(),
                });
            }
        }
        if good.is_empty() {
            // End of a single pass. One that produced nothing at all is an error, not a result.
            if self.produced == 0 {
                return Err(DataError::AllBad {
                    shards: self.stream.patience(),
                    what: "the whole pass produced no usable sample".into(),
                    skipped: self.total_skipped(),
                });
            }
            return Ok(None);
        }
        self.produced += good.len() as u64;
        self.assemble(good).map(Some)
    }

    fn total_skipped(&self) -> SkipCounts {
        let mut all = self.stream.skipped().clone();
        for (r, n) in &self.skipped.0 {
            *all.0.entry(*r).or_default() += n;
        }
        all
    }

    fn assemble(&mut self, good: Vec<Prepared>) -> Result<Batch, DataError> {
        let n = good.len() as i64;
        let s = self.opts.transform.size as i64;
        let mut pixels = Vec::with_capacity(good.len() * (s * s * 3) as usize);
        for p in &good {
            pixels.extend_from_slice(&p.pixels);
        }
        let captions: Vec<String> = good.iter().map(|p| p.caption.clone()).collect();
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        let ids = self.tokenizer.encode(&refs).map_err(DataError::Tokenizer)?;
        let ctx = self.tokenizer.context_length() as i64;
        if ids.len() as i64 != n * ctx {
            return Err(DataError::Tokenizer(format!(
                "expected {} ids for {n} captions, got {}",
                n * ctx,
                ids.len()
            )));
        }
        let images = normalize(&pixels, n, s, self.opts.mean, self.opts.std)?;
        let mut state = self.stream.state();
        state.skipped = self.total_skipped();
        Ok(Batch {
            images,
            tokens: Tensor::from_slice(&ids).view([n, ctx]),
            labels: if self.opts.keys.label {
                Some(good.iter().map(|p| p.label.unwrap_or(-1)).collect())
            } else {
                None
            },
            keys: good.into_iter().map(|p| p.key).collect(),
            captions,
            skipped: state.skipped.clone(),
            state,
        })
    }
}

/// HWC u8 pixels of n images → normalised `[n, 3, s, s]` float32, one fused pass per op.
fn normalize(
    pixels: &[u8],
    n: i64,
    s: i64,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<Tensor, DataError> {
    let x = Tensor::from_slice(pixels)
        .view([n, s, s, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float);
    let scale: Vec<f32> = std.iter().map(|sd| (1.0 / (255.0 * sd)) as f32).collect();
    let shift: Vec<f32> = mean
        .iter()
        .zip(std)
        .map(|(m, sd)| (-m / sd) as f32)
        .collect();
    let scale = Tensor::from_slice(&scale).view([1, 3, 1, 1]);
    let shift = Tensor::from_slice(&shift).view([1, 3, 1, 1]);
    Ok(x.f_mul(&scale)?.f_add(&shift)?.contiguous())
}

/// Caption, label and image of one sample, or why it is unusable. Cheap checks come first so a
/// sample without a caption is never decoded.
fn prepare(
    s: &StreamSample,
    opts: &LoaderOptions,
    transform: &ImageTransform,
    resizer: &mut Resizer,
) -> Result<Prepared, SkipReason> {
    let keys = &opts.keys;
    let caption = caption_of(&s.raw, keys)?;
    let label = if keys.label {
        Some(label_of(&s.raw)?)
    } else {
        None
    };
    let pixels = transform.apply(image_of(&s.raw, keys)?, s.index, resizer)?;
    Ok(Prepared {
        pixels,
        caption,
        label,
        key: s.raw.key.clone(),
    })
}

/// The sample's caption, trimmed: from the text member, or a field of the `json` member.
pub(crate) fn caption_of(raw: &RawSample, keys: &SampleKeys) -> Result<String, SkipReason> {
    let caption = match &keys.json_caption_field {
        Some(field) => {
            let bytes = raw.member("json").ok_or(SkipReason::MissingCaption)?;
            let v: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|_| SkipReason::BadJson)?;
            v.get(field)
                .and_then(|c| c.as_str())
                .ok_or(SkipReason::BadJson)?
                .to_string()
        }
        None => {
            let bytes = raw.member(&keys.text).ok_or(SkipReason::MissingCaption)?;
            std::str::from_utf8(bytes)
                .map_err(|_| SkipReason::InvalidUtf8)?
                .to_string()
        }
    };
    let caption = caption.trim();
    if caption.is_empty() {
        return Err(SkipReason::EmptyCaption);
    }
    Ok(caption.to_string())
}

/// The bytes of the first image member present, in `keys.image` order.
pub(crate) fn image_of<'a>(raw: &'a RawSample, keys: &SampleKeys) -> Result<&'a [u8], SkipReason> {
    keys.image
        .iter()
        .find_map(|k| raw.member(k))
        .ok_or(SkipReason::MissingImage)
}

/// The integer class label of an evaluation sample (`.cls`).
pub(crate) fn label_of(raw: &RawSample) -> Result<i64, SkipReason> {
    let bytes = raw.member("cls").ok_or(SkipReason::BadLabel)?;
    let text = std::str::from_utf8(bytes).map_err(|_| SkipReason::BadLabel)?;
    text.trim().parse::<i64>().map_err(|_| SkipReason::BadLabel)
}

//! The background pipeline: a producer thread pulls samples from the [`SampleStream`] (one
//! [`super::stream::ShardStream`] or a mixture of them), decodes
//! and augments them in parallel on a rayon pool, tokenizes captions, assembles tensors and
//! queues finished batches, so the training loop only pops.
//!
//! A batch is exactly the next `batch_size` usable samples of the stream, and carries the stream
//! state right after them: saving that state with a checkpoint resumes at the next batch.
use super::buffers::{BatchBuffers, HostMemory};
use super::mixture::SampleStream;
use super::pixels::Slots;
use super::sample::{SampleKeys, caption_of, captions_of, image_of, label_of, training_caption};
use super::stream::{StreamSample, StreamState};
use super::transform::ImageTransform;
use super::watch::SourceWatch;
use super::{DataError, SkipCounts, SkipReason};
use fast_image_resize::Resizer;
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;
use tch::Tensor;

/// Caption → fixed-length token ids; implemented by the text module's tokenizer.
pub trait Tokenize: Send + Sync {
    fn context_length(&self) -> usize;
    /// Row-major `[captions.len(), context_length]` ids.
    fn encode(&self, captions: &[&str]) -> Result<Vec<i64>, String>;
}

/// The tokenization of a loader whose batches need no token ids (images only: embedding,
/// linear probe, k-NN, and the image side of an evaluation, which encodes texts itself):
/// context length 0, so a batch's `tokens` are `[B, 0]`. Images need no tokenizer, and a model
/// folder without one can still encode them.
pub struct NoTokens;

impl Tokenize for NoTokens {
    fn context_length(&self) -> usize {
        0
    }

    fn encode(&self, _captions: &[&str]) -> Result<Vec<i64>, String> {
        Ok(Vec::new())
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
    /// Pinned when the batches go to a CUDA device.
    pub memory: HostMemory,
}

/// A training or evaluation batch, on the CPU (pinned for CUDA runs) until
/// [`super::device::DeviceBatches`] moves its tensors to the compute device.
pub struct Batch {
    /// `[B, 3, S, S]` u8, RGB, not normalised: [`super::pixels::PixelNorm`] does that on the
    /// compute device.
    pub images: Tensor,
    /// `[B, context_length]` int64.
    pub tokens: Tensor,
    pub captions: Vec<String>,
    pub keys: Vec<String>,
    /// `.cls` labels when `SampleKeys::label` is set.
    pub labels: Option<Vec<i64>>,
    /// Every caption of each sample when `SampleKeys::all_captions` is set.
    pub caption_sets: Option<Vec<Vec<String>>>,
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
        stream: impl Into<SampleStream>,
        tokenizer: Arc<dyn Tokenize>,
        opts: LoaderOptions,
    ) -> Result<Self, DataError> {
        keep_freed_memory();
        let stream = stream.into();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.workers.max(1))
            .thread_name(|i| format!("cliptrain-decode-{i}"))
            .build()
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let patience = stream.patience();
        let watch = stream.source_watch();
        let chunk = opts.batch_size;
        let (chunk_tx, chunk_rx) = sync_channel(2);
        std::thread::Builder::new()
            .name("cliptrain-reader".into())
            .spawn(move || read_chunks(stream, chunk, chunk_tx))
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cliptrain-loader".into())
            .spawn(move || {
                Producer {
                    chunks: chunk_rx,
                    current: None,
                    patience,
                    watch,
                    buffers: BatchBuffers::new(opts.memory, opts.prefetch + 4),
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

/// Samples read ahead by the reader thread, with the stream state at their start.
struct Chunk {
    start: StreamState,
    samples: std::collections::VecDeque<StreamSample>,
    /// Samples taken from this chunk so far.
    consumed: u64,
    /// Shard-level problems the stream had counted by the end of this chunk.
    stream_skipped: SkipCounts,
    /// The stream is over after this chunk (single-pass order).
    last: bool,
}

/// The reader thread: tar parsing and shuffling, one chunk ahead of decoding, so the decode
/// pool never waits on I/O.
fn read_chunks(mut stream: SampleStream, size: usize, tx: SyncSender<Result<Chunk, DataError>>) {
    loop {
        let start = stream.state();
        let mut samples = std::collections::VecDeque::with_capacity(size);
        let mut last = false;
        while samples.len() < size {
            match stream.next_sample() {
                Ok(Some(s)) => samples.push_back(s),
                Ok(None) => {
                    last = true;
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        let chunk = Chunk {
            start,
            samples,
            consumed: 0,
            stream_skipped: stream.skipped(),
            last,
        };
        if tx.send(Ok(chunk)).is_err() || last {
            return;
        }
    }
}

struct Producer {
    chunks: Receiver<Result<Chunk, DataError>>,
    current: Option<Chunk>,
    /// See [`SampleStream::patience`].
    patience: u64,
    /// A mixture's sources, watched for one that gives no usable sample.
    watch: Option<SourceWatch>,
    buffers: BatchBuffers,
    tokenizer: Arc<dyn Tokenize>,
    opts: LoaderOptions,
    pool: rayon::ThreadPool,
    /// Sample-level skips (the stream counts shard-level ones).
    skipped: SkipCounts,
    /// Usable samples batched so far.
    produced: u64,
}

/// A decoded sample (or why it is unusable), its shard read (epoch, cursor) and its source.
type Decoded = (Result<Prepared, SkipReason>, (u64, u64), usize);

/// What a usable sample contributes to a batch besides its pixels (already in the batch tensor).
struct Prepared {
    caption: String,
    label: Option<i64>,
    key: String,
    caption_set: Vec<String>,
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
        let size = self.opts.transform.size as usize;
        let images = self
            .buffers
            .images([b as i64, 3, size as i64, size as i64])?;
        let slots = Slots::new(&images);
        let mut good: Vec<Prepared> = Vec::with_capacity(b);
        let mut bad_reads: HashSet<(u64, u64)> = HashSet::new();
        let mut exhausted = false;
        while good.len() < b && !exhausted {
            let start = good.len();
            let mut raw: Vec<StreamSample> = Vec::with_capacity(b - start);
            while raw.len() < b - start {
                match self.next_sample()? {
                    Some(s) => raw.push(s),
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            // Sample j is decoded straight into slot start + j; the usable ones are then
            // compacted to the front (a copy only happens after a skipped sample).
            let (opts, transform, slots) = (&self.opts, &self.opts.transform, &slots);
            let results: Vec<Decoded> = self.pool.install(|| {
                raw.into_par_iter()
                    .enumerate()
                    .map_init(Resizer::new, |rs, (j, s)| {
                        let r = prepare(&s, opts, transform, rs).map(|(p, pixels)| {
                            slots.write(start + j, &pixels);
                            p
                        });
                        (r, (s.pos.epoch, s.pos.cursor), s.source)
                    })
                    .collect()
            });
            for (j, (r, read, source)) in results.into_iter().enumerate() {
                match r {
                    Ok(p) => {
                        slots.move_slot(start + j, good.len());
                        good.push(p);
                        bad_reads.clear();
                        if let Some(w) = &mut self.watch {
                            w.usable(source);
                        }
                    }
                    Err(reason) => {
                        self.skipped.add(reason);
                        bad_reads.insert(read);
                        if let Some(w) = &mut self.watch {
                            w.unusable(source)?;
                        }
                    }
                }
            }
            if bad_reads.len() as u64 > self.patience {
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
                    shards: self.patience,
                    what: "the whole pass produced no usable sample".into(),
                    skipped: self.total_skipped(),
                });
            }
            return Ok(None);
        }
        self.produced += good.len() as u64;
        let images = if good.len() < b {
            images.narrow(0, 0, good.len() as i64)
        } else {
            images
        };
        self.assemble(images, good).map(Some)
    }

    /// The next sample from the reader thread; `None` at the end of a single pass.
    fn next_sample(&mut self) -> Result<Option<StreamSample>, DataError> {
        loop {
            if let Some(c) = self.current.as_mut() {
                if let Some(s) = c.samples.pop_front() {
                    c.consumed += 1;
                    return Ok(Some(s));
                }
                if c.last {
                    return Ok(None);
                }
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = Some(chunk?),
                Err(_) => {
                    return Err(DataError::Loader(
                        "the reader thread exited unexpectedly".into(),
                    ));
                }
            }
        }
    }

    /// Where the stream resumes after the samples taken so far.
    fn resume_state(&self) -> StreamState {
        let c = self
            .current
            .as_ref()
            .expect("a batch was read from a chunk");
        let mut state = c.start.clone();
        state.replay = c.consumed;
        state
    }

    fn total_skipped(&self) -> SkipCounts {
        let mut all = self
            .current
            .as_ref()
            .map(|c| c.stream_skipped.clone())
            .unwrap_or_default();
        for (r, n) in &self.skipped.0 {
            *all.0.entry(*r).or_default() += n;
        }
        all
    }

    fn assemble(&mut self, images: Tensor, mut good: Vec<Prepared>) -> Result<Batch, DataError> {
        let n = good.len() as i64;
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
        // The saved counts are the stream's at the chunk start (replaying the chunk recounts
        // the rest) plus ours; the reported counts are everything seen so far.
        let mut state = self.resume_state();
        for (r, n) in &self.skipped.0 {
            *state.skipped.0.entry(*r).or_default() += n;
        }
        let skipped = self.total_skipped();
        Ok(Batch {
            images,
            tokens: self.buffers.tokens(&ids, n, ctx)?,
            labels: if self.opts.keys.label {
                Some(good.iter().map(|p| p.label.unwrap_or(-1)).collect())
            } else {
                None
            },
            caption_sets: if self.opts.keys.all_captions {
                Some(
                    good.iter_mut()
                        .map(|p| std::mem::take(&mut p.caption_set))
                        .collect(),
                )
            } else {
                None
            },
            keys: good.into_iter().map(|p| p.key).collect(),
            captions,
            skipped,
            state,
        })
    }
}

/// Decoding allocates and frees a few hundred KiB per image. glibc serves blocks that size
/// with mmap/munmap and trims the heap eagerly, so each one costs fresh zeroed pages from the
/// kernel (measured: a fifth of the loader's time in page faults). Raising both thresholds lets
/// freed blocks be reused; memory still stays bounded by the queue sizes.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Caption, label and image of one sample, or why it is unusable. Cheap checks come first so a
/// sample without a caption is never decoded.
fn prepare(
    s: &StreamSample,
    opts: &LoaderOptions,
    transform: &ImageTransform,
    resizer: &mut Resizer,
) -> Result<(Prepared, Vec<u8>), SkipReason> {
    let keys = &opts.keys;
    let (caption, caption_set) = if keys.image_only {
        (String::new(), Vec::new())
    } else if matches!(keys.draw, super::sample::CaptionDraw::Classes(_)) {
        // Labelled training data: the caption is made from the label.
        let seed = transform.seed;
        (training_caption(&s.raw, keys, seed, s.index)?, Vec::new())
    } else if keys.all_captions {
        let all = captions_of(&s.raw, keys)?;
        (all[0].clone(), all)
    } else if keys.label {
        match caption_of(&s.raw, keys) {
            Ok(c) => (c, Vec::new()),
            // A classification set needs labels, not captions.
            Err(SkipReason::MissingCaption) => (String::new(), Vec::new()),
            Err(e) => return Err(e),
        }
    } else {
        let seed = transform.seed;
        (training_caption(&s.raw, keys, seed, s.index)?, Vec::new())
    };
    let label = if keys.label {
        Some(label_of(&s.raw)?)
    } else {
        None
    };
    let pixels = transform.apply(image_of(&s.raw, keys)?, s.index, resizer)?;
    Ok((
        Prepared {
            caption,
            label,
            key: s.raw.key.clone(),
            caption_set,
        },
        pixels,
    ))
}

impl Tokenize for crate::text::TextTokenizer {
    fn context_length(&self) -> usize {
        crate::text::TextTokenizer::context_length(self)
    }

    fn encode(&self, captions: &[&str]) -> Result<Vec<i64>, String> {
        self.encode_batch(captions).map_err(|e| e.to_string())
    }
}

//! The data path: WebDataset shards in, ready tensors out.
//!
//! `spec` turns shard specs into shards, `tarstream` reads samples out of tar streams,
//! `stream` orders shards and samples (epochs, resampling, ranks, shuffling, resume, and
//! resuming with another number of ranks), `mixture` draws from several weighted streams (`watch` reports a source that gives no usable sample),
//! `sample` says which members hold the image, caption and label, `transform` decodes and
//! augments images, and `loader` runs it all on background threads and
//! hands the trainer finished batches of u8 pixels (host memory from `buffers`, pinned for CUDA),
//! which `device` moves to the compute device one batch ahead and `pixels` normalises there.
//! On the writing side, `writer` writes img2dataset-style
//! shards, `staging` publishes a set of files at once (builds and exports: nothing half-written
//! under a final name), `synth` generates the embedded default dataset, and `inspect` reports on
//! shards.
pub mod augment;
pub mod buffers;
pub mod device;
pub mod filter;
pub mod import;
pub mod inspect;
pub mod loader;
pub mod mixture;
pub mod pixels;
pub mod resize;
pub mod sample;
pub mod spec;
pub mod staging;
pub mod stream;
pub mod synth;
pub mod tarstream;
pub mod transform;
pub mod watch;
pub mod writer;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a sample (or the rest of a shard) was skipped. Counted by reason, never fatal alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The shard could not be opened or read (missing file, failing `pipe:` command).
    UnreadableShard,
    /// The tar stream ended inside a header: the rest of the shard is lost.
    TruncatedShard,
    /// A tar header failed its checksum: the rest of the shard is lost.
    CorruptShard,
    /// A member's data was cut short: that sample and the rest of the shard are lost.
    TruncatedMember,
    /// A member above the size limit.
    MemberTooLarge,
    MissingImage,
    MissingCaption,
    EmptyImage,
    UndecodableImage,
    /// The image header claims more pixels than `data.max_image_pixels`.
    ImageTooLarge,
    InvalidUtf8,
    EmptyCaption,
    /// The `json` member is not JSON or lacks the configured caption field.
    BadJson,
    /// A `.cls` label that is not an integer (evaluation sets).
    BadLabel,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnreadableShard => "unreadable_shard",
            SkipReason::TruncatedShard => "truncated_shard",
            SkipReason::CorruptShard => "corrupt_shard",
            SkipReason::TruncatedMember => "truncated_member",
            SkipReason::MemberTooLarge => "member_too_large",
            SkipReason::MissingImage => "missing_image",
            SkipReason::MissingCaption => "missing_caption",
            SkipReason::EmptyImage => "empty_image",
            SkipReason::UndecodableImage => "undecodable_image",
            SkipReason::ImageTooLarge => "image_too_large",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::EmptyCaption => "empty_caption",
            SkipReason::BadJson => "bad_json",
            SkipReason::BadLabel => "bad_label",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Skipped samples (and broken shards) by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts(pub BTreeMap<SkipReason, u64>);

impl SkipCounts {
    pub fn add(&mut self, reason: SkipReason) {
        *self.0.entry(reason).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn get(&self, reason: SkipReason) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }
}

impl fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Errors that stop the data path. Bad samples are not errors; they are skipped and counted.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("bad shard spec \"{spec}\": {reason}")]
    Spec { spec: String, reason: String },
    #[error("shard {shard}: {reason}")]
    ShardOpen { shard: String, reason: String },
    #[error("no shards: {0}")]
    NoShards(String),
    #[error(
        "no usable sample in {shards} consecutive shard reads ({what}); skipped so far: {skipped}. \
         Check the shard spec and the image/caption keys (data.image_keys, data.text_key)"
    )]
    AllBad {
        shards: u64,
        what: String,
        skipped: SkipCounts,
    },
    #[error(
        "data.shuffle_buffer = {wanted}: its first {samples} samples already take {:.2} GB, \
         more than this run may hold in memory; lower data.shuffle_buffer",
        *.bytes as f64 / 1e9
    )]
    BufferTooLarge {
        samples: usize,
        wanted: usize,
        bytes: u64,
    },
    #[error(
        "{name} produced no usable sample in {draws} draws in a row (data.strict = true); \
         check its shards with `cliptrain data inspect`, or lower its weight"
    )]
    SourceDry { name: String, draws: u64 },
    #[error("cannot resume the data stream: {0}")]
    Resume(String),
    #[error("data loader thread stopped unexpectedly: {0}")]
    Loader(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

//! Ordering shards and samples: epochs with per-epoch shard shuffling, resampling with
//! replacement, a single ordered pass (evaluation), rank splitting, a sample shuffle buffer, and
//! a small serializable state from which the exact same sequence continues.
//!
//! All randomness is a pure function of (seed, rank, counter), so the state is just counters and
//! the positions of the samples sitting in the shuffle buffer — no RNG internals, no sample bytes.
use super::spec::{Shard, ShardInput};
use super::tarstream::{RawSample, SampleReader, TarEvent};
use super::{DataError, SkipCounts, SkipReason};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

mod check;
mod elastic;
mod hash;
pub use check::{Bounds, MAX_COUNT};
pub use elastic::resize;
pub(crate) use hash::salted;
use hash::{epoch_order, fingerprint};
pub use hash::{mix, stable_hash};

/// How shards are visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Every shard of this rank once per epoch, order reshuffled each epoch; endless.
    Epoch,
    /// Shards drawn with replacement, independently per rank; endless.
    Resampled,
    /// This rank's shards once, in spec order (evaluation, inspection).
    Once,
}

#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub order: Order,
    /// Samples held for shuffling; 0 or 1 passes samples through in order.
    pub shuffle_buffer: usize,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
}

impl StreamOptions {
    /// Every sample once, in shard order, by one process: how tools (evaluation, tokenizer
    /// training, filtering) read a set.
    pub fn once() -> Self {
        Self {
            order: Order::Once,
            shuffle_buffer: 0,
            seed: 0,
            rank: 0,
            world_size: 1,
        }
    }
}

/// Where a sample came from: the shard read (epoch, cursor) and its index inside that shard.
/// A sample drained from a [`CarryUnit`] after an elastic resume has `carried` set, and then
/// `cursor` indexes the stream's carry list instead of its own shard reads (`epoch` is the
/// unit's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SamplePos {
    pub epoch: u64,
    pub cursor: u64,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried: bool,
}

/// A run of samples of one shard handed to this rank by an elastic resume: samples `from..to`
/// (by index in the shard, skipped ones counted) of `shards[shard]`; `to: None` = to its end.
/// `epoch` is the epoch they belong to (their samples' [`SamplePos::epoch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarryUnit {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub shard: usize,
    pub from: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// A sample leaving the stream, numbered in emission order (`index` seeds its augmentation).
#[derive(Debug, Clone)]
pub struct StreamSample {
    pub raw: RawSample,
    pub pos: SamplePos,
    pub index: u64,
    pub shard: String,
    /// The mixture's source it was drawn from (0 for a single stream).
    pub source: usize,
}

/// Everything needed to continue the stream exactly; serializes to a small JSON object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Hash of the shard list and ordering settings; resuming with others is refused.
    pub fingerprint: String,
    pub epoch: u64,
    pub cursor: u64,
    /// Samples already consumed from the shard at (epoch, cursor).
    pub offset: u64,
    pub emitted: u64,
    /// Positions of the samples in the shuffle buffer, in buffer order.
    pub buffer: Vec<SamplePos>,
    pub skipped: SkipCounts,
    /// Consecutive shard reads that yielded no sample at all.
    pub empty_run: u64,
    /// Samples to draw and discard right after restoring: the loader reads ahead in chunks and
    /// records the state at a chunk's start plus how far into the chunk a batch ended.
    #[serde(default)]
    pub replay: u64,
    /// Left over by the ranks of another world size (elastic resume): drained, in order, before
    /// this rank's own shards of `epoch`. Kept while any buffered sample still refers to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carry: Vec<CarryUnit>,
    /// The carry unit being read (`offset` is then an index into its shard).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub carry_next: u64,
    /// Non-zero after an elastic resume in resampled mode: the stream's draws are re-derived
    /// from (seed, salt) instead of the seed alone.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub salt: u64,
    /// A mixture's sources, each its own stream (then `emitted` counts the mixture's draws).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<StreamState>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

struct OpenShard {
    reader: SampleReader<ShardInput>,
    url: String,
    offset: u64,
    yielded: bool,
    /// A carry unit ends here rather than at the end of the shard.
    end: Option<u64>,
}

pub struct ShardStream {
    shards: Vec<Shard>,
    opts: StreamOptions,
    fingerprint: String,
    epoch: u64,
    cursor: u64,
    current: Option<OpenShard>,
    buffer: Vec<(SamplePos, String, RawSample)>,
    emitted: u64,
    skipped: SkipCounts,
    empty_run: u64,
    exhausted: bool,
    /// Bytes of the raw samples in `buffer`, and the most it may hold.
    buffer_bytes: u64,
    max_buffer_bytes: u64,
    /// Shards whose problem was logged already: each is logged once, later passes only count.
    warned: HashSet<String>,
    /// See [`StreamState::carry`]; `carry_next == carry.len()` once drained.
    carry: Vec<CarryUnit>,
    carry_next: usize,
    /// See [`StreamState::salt`].
    salt: u64,
}

impl ShardStream {
    pub fn new(shards: Vec<Shard>, opts: StreamOptions) -> Result<Self, DataError> {
        if shards.is_empty() {
            return Err(DataError::NoShards(
                "the shard spec expands to nothing".into(),
            ));
        }
        if opts.world_size == 0 || opts.rank >= opts.world_size {
            return Err(DataError::NoShards(format!(
                "rank {} is outside world size {}",
                opts.rank, opts.world_size
            )));
        }
        if opts.order != Order::Resampled && shards.len() < opts.world_size {
            return Err(DataError::NoShards(format!(
                "{} shard(s) cannot be split over {} ranks so that each sees distinct data; \
                 write at least {} shards or use data.mode = \"resampled\"",
                shards.len(),
                opts.world_size,
                opts.world_size
            )));
        }
        let fingerprint = fingerprint(&shards, &opts);
        Ok(Self {
            shards,
            opts,
            fingerprint,
            epoch: 0,
            cursor: 0,
            current: None,
            buffer: Vec::new(),
            emitted: 0,
            skipped: SkipCounts::default(),
            empty_run: 0,
            exhausted: false,
            buffer_bytes: 0,
            max_buffer_bytes: u64::MAX,
            warned: HashSet::new(),
            carry: Vec::new(),
            carry_next: 0,
            salt: 0,
        })
    }

    /// The seed every draw derives from: the configured one, re-derived after a salt.
    fn seed(&self) -> u64 {
        salted(self.opts.seed, self.salt)
    }

    /// Whether the stream is still draining carried-over samples.
    fn reading_carry(&self) -> bool {
        self.carry_next < self.carry.len()
    }

    /// Bounds the shuffle buffer by the bytes its raw samples take: reaching `bytes` is an
    /// error naming `data.shuffle_buffer` (never a silent change, which would change the
    /// batches with the host's memory).
    pub fn limit_buffer_bytes(mut self, bytes: u64) -> Self {
        self.max_buffer_bytes = bytes;
        self
    }

    /// Logs a shard's problem the first time only; every pass still counts it in the skips.
    fn warn_once(&mut self, url: &str, msg: impl std::fmt::Display) {
        if self.warned.insert(url.to_string()) {
            tracing::warn!("{msg} (logged once per shard; later passes are only counted)");
        } else {
            tracing::debug!("{msg}");
        }
    }

    /// Continues from `state`: reopens the current shard at its offset and re-reads the samples
    /// that were waiting in the shuffle buffer.
    pub fn restore(
        shards: Vec<Shard>,
        opts: StreamOptions,
        state: &StreamState,
    ) -> Result<Self, DataError> {
        let mut s = Self::new(shards, opts)?;
        if state.fingerprint != s.fingerprint {
            return Err(DataError::Resume(
                "the shard list, data mode, shuffle buffer, seed or rank/world size changed since the state was saved".into(),
            ));
        }
        // `replay` is bounded by the caller, who knows the batch (the run's preflight).
        let bounds = Bounds {
            shards: s.shards.len(),
            max_replay: u64::MAX,
        };
        let no = state.problems("the saved position", &s.opts, bounds);
        if !no.is_empty() {
            return Err(DataError::Resume(no.join("; ")));
        }
        s.carry = state.carry.clone();
        s.carry_next = (state.carry_next as usize).min(s.carry.len());
        s.salt = state.salt;
        s.epoch = state.epoch;
        s.cursor = state.cursor;
        s.emitted = state.emitted;
        s.skipped = state.skipped.clone();
        s.empty_run = state.empty_run;
        s.buffer = s.reread(&state.buffer)?;
        s.buffer_bytes = s.buffer.iter().map(|(_, _, r)| raw_bytes(r)).sum();
        if state.offset > 0 {
            let (index, end) = match s.carry.get(s.carry_next) {
                Some(unit) => (unit.shard, unit.to),
                None => (s.shard_index(s.epoch, s.cursor), None),
            };
            let open = s.open_at(index, state.offset, end)?.ok_or_else(|| {
                DataError::Resume(format!(
                    "shard {} has fewer than {} samples now",
                    s.shards[index].url(),
                    state.offset
                ))
            })?;
            s.current = Some(open);
        }
        for _ in 0..state.replay {
            if s.next_sample()?.is_none() {
                return Err(DataError::Resume(
                    "the stream ended while replaying to the saved position".into(),
                ));
            }
        }
        Ok(s)
    }

    pub fn state(&self) -> StreamState {
        let buffer: Vec<SamplePos> = self.buffer.iter().map(|(p, _, _)| *p).collect();
        // A drained carry list no sample refers to any more is left out: it changes nothing.
        let carry_used = self.reading_carry() || buffer.iter().any(|p| p.carried);
        StreamState {
            fingerprint: self.fingerprint.clone(),
            epoch: self.epoch,
            cursor: self.cursor,
            offset: self.current.as_ref().map_or(0, |c| c.offset),
            emitted: self.emitted,
            buffer,
            skipped: self.skipped.clone(),
            empty_run: self.empty_run,
            replay: 0,
            carry: if carry_used {
                self.carry.clone()
            } else {
                vec![]
            },
            carry_next: if carry_used {
                self.carry_next as u64
            } else {
                0
            },
            salt: self.salt,
            sources: vec![],
        }
    }

    /// Shard-level problems seen so far (sample-level ones are counted by the loader).
    pub fn skipped(&self) -> &SkipCounts {
        &self.skipped
    }

    pub fn shuffle_buffer(&self) -> usize {
        self.opts.shuffle_buffer
    }

    /// Distinct shard reads after which a stream with no usable sample is declared broken.
    pub fn patience(&self) -> u64 {
        match self.opts.order {
            Order::Resampled => 2 * self.shards.len() as u64 + 8,
            _ => self.rank_shards() as u64 + 1,
        }
    }

    /// The next sample; `None` only when an `Order::Once` pass is over.
    pub fn next_sample(&mut self) -> Result<Option<StreamSample>, DataError> {
        let want = self.opts.shuffle_buffer.max(1);
        while self.buffer.len() < want && !self.exhausted {
            match self.read_raw()? {
                Some(item) => self.hold(item)?,
                None => self.exhausted = true,
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let j = if self.opts.shuffle_buffer <= 1 {
            0
        } else {
            (mix(self.seed(), 0x5_4FF1E ^ self.opts.rank as u64, self.emitted)
                % self.buffer.len() as u64) as usize
        };
        let (pos, shard, raw) = if self.opts.shuffle_buffer <= 1 {
            self.buffer.remove(j)
        } else {
            self.buffer.swap_remove(j)
        };
        self.buffer_bytes = self.buffer_bytes.saturating_sub(raw_bytes(&raw));
        let index = self.emitted;
        self.emitted += 1;
        Ok(Some(StreamSample {
            raw,
            pos,
            index,
            shard,
            source: 0,
        }))
    }

    /// Puts a sample into the shuffle buffer, refusing to grow it past `max_buffer_bytes`.
    fn hold(&mut self, item: (SamplePos, String, RawSample)) -> Result<(), DataError> {
        self.buffer_bytes += raw_bytes(&item.2);
        self.buffer.push(item);
        if self.buffer_bytes > self.max_buffer_bytes {
            return Err(DataError::BufferTooLarge {
                samples: self.buffer.len(),
                wanted: self.opts.shuffle_buffer,
                bytes: self.buffer_bytes,
            });
        }
        Ok(())
    }

    /// The next raw sample in shard order, opening shards as needed.
    fn read_raw(&mut self) -> Result<Option<(SamplePos, String, RawSample)>, DataError> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let carried = self.reading_carry();
            let (epoch, cursor) = if carried {
                (self.carry[self.carry_next].epoch, self.carry_next as u64)
            } else {
                (self.epoch, self.cursor)
            };
            let cur = self.current.as_mut().expect("a shard is open");
            if cur.end.is_some_and(|end| cur.offset >= end) {
                self.close_current(false);
                continue;
            }
            match cur.reader.next_event() {
                Some(TarEvent::Sample(raw)) => {
                    let pos = SamplePos {
                        epoch,
                        cursor,
                        offset: cur.offset,
                        carried,
                    };
                    cur.offset += 1;
                    cur.yielded = true;
                    self.empty_run = 0;
                    return Ok(Some((pos, cur.url.clone(), raw)));
                }
                Some(TarEvent::Skipped(reason)) => {
                    cur.offset += 1;
                    self.skipped.add(reason);
                }
                Some(TarEvent::Broken(reason, msg)) => {
                    let url = cur.url.clone();
                    self.warn_once(&url, format!("shard {url}: {msg}; skipping the rest of it"));
                    self.skipped.add(reason);
                    self.close_current(false);
                }
                None => self.close_current(true),
            }
        }
    }

    fn close_current(&mut self, read_to_end: bool) {
        let Some(cur) = self.current.take() else {
            return;
        };
        if !cur.yielded {
            self.empty_run += 1;
        }
        if let Err(e) = cur.reader.into_inner().finish(read_to_end) {
            self.warn_once(&cur.url, e);
            self.skipped.add(SkipReason::UnreadableShard);
        }
        self.advance();
    }

    fn advance(&mut self) {
        if self.reading_carry() {
            self.carry_next += 1;
            return;
        }
        self.cursor += 1;
        if self.opts.order == Order::Epoch && self.cursor >= self.rank_shards() as u64 {
            self.epoch += 1;
            self.cursor = 0;
        }
    }

    /// Opens the shard at the cursor; false when a `Once` pass is over.
    fn open_next(&mut self) -> Result<bool, DataError> {
        while let Some(unit) = self.carry.get(self.carry_next).cloned() {
            match self.open_at(unit.shard, unit.from, unit.to) {
                Ok(Some(open)) => {
                    self.current = Some(open);
                    return Ok(true);
                }
                // Shorter than its carried range now: nothing of it is left to read.
                Ok(None) => self.carry_next += 1,
                Err(e) => {
                    let url = self.shards[unit.shard].url();
                    self.warn_once(&url, format!("{e}; skipping it"));
                    self.skipped.add(SkipReason::UnreadableShard);
                    self.carry_next += 1;
                }
            }
        }
        loop {
            if self.opts.order == Order::Once && self.cursor >= self.rank_shards() as u64 {
                return Ok(false);
            }
            if self.empty_run >= self.patience() {
                return Err(DataError::AllBad {
                    shards: self.empty_run,
                    what: "no shard yielded any sample".into(),
                    skipped: self.skipped.clone(),
                });
            }
            let shard = self.shard_at(self.epoch, self.cursor).clone();
            match shard.open() {
                Ok(input) => {
                    self.current = Some(OpenShard {
                        reader: SampleReader::new(input),
                        url: shard.url(),
                        offset: 0,
                        yielded: false,
                        end: None,
                    });
                    return Ok(true);
                }
                Err(e) => {
                    self.warn_once(&shard.url(), format!("{e}; skipping it"));
                    self.skipped.add(SkipReason::UnreadableShard);
                    self.empty_run += 1;
                    self.advance();
                }
            }
        }
    }

    /// Opens `shards[index]` with its first `offset` samples (skipped ones included) passed
    /// over; `None` when it has fewer. A carried unit counts as having yielded, so a few empty
    /// leftovers never look like a run of broken shards.
    fn open_at(
        &self,
        index: usize,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Option<OpenShard>, DataError> {
        let shard = &self.shards[index];
        let mut open = OpenShard {
            reader: SampleReader::new(shard.open()?),
            url: shard.url(),
            offset: 0,
            yielded: true,
            end,
        };
        while open.offset < offset {
            match open.reader.next_event() {
                Some(TarEvent::Sample(_)) | Some(TarEvent::Skipped(_)) => open.offset += 1,
                _ => return Ok(None),
            }
        }
        Ok(Some(open))
    }

    pub(super) fn rank_shards(&self) -> usize {
        let (n, w, r) = (self.shards.len(), self.opts.world_size, self.opts.rank);
        n / w + usize::from(r < n % w)
    }

    /// The shard read at (epoch, cursor) for this rank.
    fn shard_at(&self, epoch: u64, cursor: u64) -> &Shard {
        &self.shards[self.shard_index(epoch, cursor)]
    }

    /// The index in the shard list of the shard read at (epoch, cursor) for this rank.
    pub(super) fn shard_index(&self, epoch: u64, cursor: u64) -> usize {
        let n = self.shards.len();
        let (w, r) = (self.opts.world_size, self.opts.rank);
        match self.opts.order {
            Order::Once => r + cursor as usize * w,
            Order::Epoch => epoch_order(n, self.seed(), epoch)[r + cursor as usize * w],
            Order::Resampled => {
                (mix(self.seed(), 0x2E5A ^ (r as u64) << 20, cursor) % n as u64) as usize
            }
        }
    }

    /// The index in the shard list of the shard a buffered sample came from.
    fn shard_index_of(&self, pos: &SamplePos) -> usize {
        if pos.carried {
            self.carry[pos.cursor as usize].shard
        } else {
            self.shard_index(pos.epoch, pos.cursor)
        }
    }

    /// Reads the samples at `positions` back from their shards, in the given order.
    fn reread(
        &self,
        positions: &[SamplePos],
    ) -> Result<Vec<(SamplePos, String, RawSample)>, DataError> {
        let mut wanted: BTreeMap<(bool, u64, u64), BTreeSet<u64>> = BTreeMap::new();
        for p in positions {
            if p.carried && p.cursor as usize >= self.carry.len() {
                return Err(DataError::Resume(format!(
                    "a buffered sample refers to carried-over unit {} of {}",
                    p.cursor,
                    self.carry.len()
                )));
            }
            wanted
                .entry((p.carried, p.epoch, p.cursor))
                .or_default()
                .insert(p.offset);
        }
        let mut found: BTreeMap<SamplePos, (String, RawSample)> = BTreeMap::new();
        for ((carried, epoch, cursor), offsets) in wanted {
            let pos = SamplePos {
                epoch,
                cursor,
                offset: 0,
                carried,
            };
            let shard = &self.shards[self.shard_index_of(&pos)];
            let mut reader = SampleReader::new(shard.open()?);
            let last = *offsets.last().expect("non-empty");
            let mut offset = 0;
            while offset <= last {
                match reader.next_event() {
                    Some(TarEvent::Sample(raw)) => {
                        if offsets.contains(&offset) {
                            found.insert(SamplePos { offset, ..pos }, (shard.url(), raw));
                        }
                        offset += 1;
                    }
                    Some(TarEvent::Skipped(_)) => offset += 1,
                    _ => break,
                }
            }
            let _ = reader.into_inner().finish(false);
        }
        positions
            .iter()
            .map(|p| {
                found.remove(p).map(|(url, raw)| (*p, url, raw)).ok_or_else(|| {
                    DataError::Resume(format!("a buffered sample (epoch {}, shard read {}, sample {}) is no longer in its shard", p.epoch, p.cursor, p.offset))
                })
            })
            .collect()
    }
}

/// The bytes a raw sample holds (its members' contents and names).
fn raw_bytes(raw: &RawSample) -> u64 {
    let members: usize = raw.members.iter().map(|(n, b)| n.len() + b.len()).sum();
    (raw.key.len() + members) as u64
}

//! Weighted mixtures of sources: each source is its own [`ShardStream`], and every sample is
//! drawn from one source chosen in proportion to the weights.
//!
//! The choice of the n-th draw is a pure function of (seed, rank, n): a Weyl sequence
//! `frac(start + n·φ)` (φ the golden ratio, `start` hashed from the seed and rank) mapped
//! through the cumulative weights. It is low-discrepancy — every window of n draws holds each
//! source's share to within a few samples, not the ±√n of independent draws — and still
//! interleaves the sources irregularly. The state is the draw counter plus each source's own
//! [`StreamState`], so a mixture resumes exactly like a single stream.
use super::spec::Shard;
use super::stream::{
    Order, ShardStream, StreamOptions, StreamSample, StreamState, mix, resize, salted,
};
use super::{DataError, SkipCounts};

/// One component of a mixture (a `[[data.sources]]` entry): its shards and its weight (> 0).
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub shards: Vec<Shard>,
    pub weight: f64,
}

/// What a training stream reads: one shard list, or a weighted mixture.
#[derive(Debug, Clone)]
pub enum TrainShards {
    Single(Vec<Shard>),
    Mixture(Vec<Component>),
}

/// A stream of samples, from one shard list or a mixture; what the loader pulls from.
pub enum SampleStream {
    Single(Box<ShardStream>),
    Mixture(MixedStream),
}

impl From<ShardStream> for SampleStream {
    fn from(s: ShardStream) -> Self {
        SampleStream::Single(Box::new(s))
    }
}

impl SampleStream {
    /// The stream of `sources` for `opts` (this rank), from its start or continuing `state`.
    pub fn open(
        sources: &TrainShards,
        opts: StreamOptions,
        state: Option<&StreamState>,
    ) -> Result<Self, DataError> {
        Ok(match (sources, state) {
            (TrainShards::Single(shards), None) => ShardStream::new(shards.clone(), opts)?.into(),
            (TrainShards::Single(shards), Some(s)) => {
                if !s.sources.is_empty() {
                    return Err(mixture_changed());
                }
                ShardStream::restore(shards.clone(), opts, s)?.into()
            }
            (TrainShards::Mixture(m), None) => SampleStream::Mixture(MixedStream::new(m, opts)?),
            (TrainShards::Mixture(m), Some(s)) => {
                SampleStream::Mixture(MixedStream::restore(m, opts, s)?)
            }
        })
    }

    /// This rank's state (`opts.rank` of `opts.world_size`) continuing `old`, the states the
    /// ranks of a job of another size saved after `step` steps (see [`resize`]).
    pub fn resized(
        sources: &TrainShards,
        opts: &StreamOptions,
        old: &[StreamState],
        step: u64,
    ) -> Result<StreamState, DataError> {
        match sources {
            TrainShards::Single(shards) => resize(shards, opts, old, step),
            TrainShards::Mixture(m) => MixedStream::resized(m, opts, old, step),
        }
    }

    pub fn next_sample(&mut self) -> Result<Option<StreamSample>, DataError> {
        match self {
            SampleStream::Single(s) => s.next_sample(),
            SampleStream::Mixture(m) => m.next_sample(),
        }
    }

    /// Where the stream continues from (see [`StreamState`]).
    pub fn state(&self) -> StreamState {
        match self {
            SampleStream::Single(s) => s.state(),
            SampleStream::Mixture(m) => m.state(),
        }
    }

    /// Shard-level problems seen so far.
    pub fn skipped(&self) -> SkipCounts {
        match self {
            SampleStream::Single(s) => s.skipped().clone(),
            SampleStream::Mixture(m) => m.skipped(),
        }
    }

    /// See [`ShardStream::patience`]; a mixture's is its sources' together.
    pub fn patience(&self) -> u64 {
        match self {
            SampleStream::Single(s) => s.patience(),
            SampleStream::Mixture(m) => m.sources.iter().map(ShardStream::patience).sum(),
        }
    }

    /// See [`ShardStream::limit_buffer_bytes`]; a mixture's sources share `bytes` evenly.
    pub fn limit_buffer_bytes(self, bytes: u64) -> Self {
        match self {
            SampleStream::Single(s) => (*s).limit_buffer_bytes(bytes).into(),
            SampleStream::Mixture(mut m) => {
                let each = bytes / m.sources.len() as u64;
                m.sources = m
                    .sources
                    .into_iter()
                    .map(|s| s.limit_buffer_bytes(each))
                    .collect();
                SampleStream::Mixture(m)
            }
        }
    }
}

/// Samples drawn from several [`ShardStream`]s in proportion to their weights.
pub struct MixedStream {
    sources: Vec<ShardStream>,
    /// Cumulative weights, normalised so the last is 1.
    cumulative: Vec<f64>,
    seed: u64,
    rank: u64,
    /// Draws so far.
    drawn: u64,
    salt: u64,
    fingerprint: String,
    /// Skip counts of the state restored from beyond its sources' own (the loader's).
    carried_skips: SkipCounts,
}

impl MixedStream {
    pub fn new(sources: &[Component], opts: StreamOptions) -> Result<Self, DataError> {
        if sources.is_empty() {
            return Err(DataError::NoShards("the mixture has no source".into()));
        }
        if let Some(s) = sources
            .iter()
            .find(|s| !(s.weight.is_finite() && s.weight > 0.0))
        {
            return Err(DataError::NoShards(format!(
                "source {:?} has weight {}; weights must be finite and > 0",
                s.name, s.weight
            )));
        }
        let total: f64 = sources.iter().map(|s| s.weight).sum();
        let mut acc = 0.0;
        let cumulative = sources
            .iter()
            .map(|s| {
                acc += s.weight / total;
                acc
            })
            .collect();
        let streams = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = StreamOptions {
                    seed: mix(opts.seed, 0x50_C5E, i as u64),
                    ..opts.clone()
                };
                ShardStream::new(s.shards.clone(), o).map_err(|e| named(&s.name, i, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut text: String = streams.iter().map(|s| s.state().fingerprint).collect();
        for s in sources {
            text.push_str(&format!("/{:?}", s.weight));
        }
        Ok(Self {
            sources: streams,
            cumulative,
            seed: opts.seed,
            rank: opts.rank as u64,
            drawn: 0,
            salt: 0,
            fingerprint: super::stream::stable_hash(&text),
            carried_skips: SkipCounts::default(),
        })
    }

    /// Continues from `state`: every source from its own state, then the draws to replay.
    pub fn restore(
        sources: &[Component],
        opts: StreamOptions,
        state: &StreamState,
    ) -> Result<Self, DataError> {
        let mut m = Self::new(sources, opts.clone())?;
        if state.fingerprint != m.fingerprint || state.sources.len() != sources.len() {
            return Err(mixture_changed());
        }
        m.sources = sources
            .iter()
            .zip(&state.sources)
            .enumerate()
            .map(|(i, (s, st))| {
                let o = StreamOptions {
                    seed: mix(opts.seed, 0x50_C5E, i as u64),
                    ..opts.clone()
                };
                ShardStream::restore(s.shards.clone(), o, st).map_err(|e| named(&s.name, i, e))
            })
            .collect::<Result<_, _>>()?;
        m.drawn = state.emitted;
        m.salt = state.salt;
        // What the loader added to the saved counts (sample-level skips) stays with the mixture.
        m.carried_skips = state.skipped.clone();
        for st in &state.sources {
            for (r, n) in &st.skipped.0 {
                let c = m.carried_skips.0.entry(*r).or_default();
                *c = c.saturating_sub(*n);
            }
        }
        m.carried_skips.0.retain(|_, n| *n > 0);
        for _ in 0..state.replay {
            if m.next_sample()?.is_none() {
                return Err(DataError::Resume(
                    "the mixture ended while replaying to the saved position".into(),
                ));
            }
        }
        Ok(m)
    }

    /// Resampled mixtures only: fresh sources re-derived from (seed, `step`).
    fn resized(
        sources: &[Component],
        opts: &StreamOptions,
        old: &[StreamState],
        step: u64,
    ) -> Result<StreamState, DataError> {
        if opts.order != Order::Resampled {
            return Err(DataError::Resume(
                "a mixture of sources is only resumed with another world size in resampled mode"
                    .into(),
            ));
        }
        for (rank, s) in old.iter().enumerate() {
            let then = StreamOptions {
                rank,
                world_size: old.len(),
                ..opts.clone()
            };
            if Self::new(sources, then)?.fingerprint != s.fingerprint {
                return Err(mixture_changed());
            }
        }
        let mut m = Self::new(sources, opts.clone())?;
        m.salt = step.max(1);
        m.drawn = old.iter().map(|s| s.emitted).max().unwrap_or(0);
        let mut state = m.state();
        for s in &mut state.sources {
            s.salt = m.salt;
        }
        Ok(state)
    }

    fn next_sample(&mut self) -> Result<Option<StreamSample>, DataError> {
        let i = self.pick();
        let Some(mut sample) = self.sources[i].next_sample()? else {
            return Ok(None);
        };
        // The mixture's draw number seeds the augmentation: sources' own counters collide.
        sample.index = self.drawn;
        self.drawn += 1;
        Ok(Some(sample))
    }

    /// The source of the next draw.
    fn pick(&self) -> usize {
        let seed = salted(self.seed, self.salt);
        let start = mix(seed, 0x313D ^ self.rank << 20, 0);
        let x = start.wrapping_add(self.drawn.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cumulative.len() - 1)
    }

    fn state(&self) -> StreamState {
        StreamState {
            fingerprint: self.fingerprint.clone(),
            emitted: self.drawn,
            skipped: self.skipped(),
            salt: self.salt,
            sources: self.sources.iter().map(ShardStream::state).collect(),
            ..StreamState::default()
        }
    }

    fn skipped(&self) -> SkipCounts {
        let mut all = self.carried_skips.clone();
        for s in &self.sources {
            for (r, n) in &s.skipped().0 {
                *all.0.entry(*r).or_default() += n;
            }
        }
        all
    }
}

fn named(name: &str, i: usize, e: DataError) -> DataError {
    let what = if name.is_empty() {
        format!("data.sources[{i}]")
    } else {
        format!("data.sources[{i}] ({name})")
    };
    match e {
        DataError::NoShards(m) => DataError::NoShards(format!("{what}: {m}")),
        DataError::Resume(m) => DataError::Resume(format!("{what}: {m}")),
        e => e,
    }
}

fn mixture_changed() -> DataError {
    DataError::Resume(
        "the data sources (data.train / data.sources, their weights), mode, shuffle buffer, seed \
         or rank/world size changed since the state was saved"
            .into(),
    )
}

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
    Bounds, MAX_COUNT, Order, ShardStream, StreamOptions, StreamSample, StreamState, mix, resize,
    salted,
};
use super::watch::SourceWatch;
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

    /// Every number of `ranks`, the positions a job of `ranks.len()` ranks saved (by rank),
    /// that no stream of these sources with `opts` (its rank and world size aside) could have
    /// saved: see [`StreamState::problems`]. A loader reads at most `max_replay` samples ahead.
    /// Positions of another layout (a mixture's for one shard list, other sources) are left to
    /// [`SampleStream::open`], which refuses them as a changed config.
    pub fn position_problems(
        sources: &TrainShards,
        opts: &StreamOptions,
        ranks: &[StreamState],
        max_replay: u64,
    ) -> Vec<String> {
        let mut no = Vec::new();
        for (rank, st) in ranks.iter().enumerate() {
            let o = StreamOptions {
                rank,
                world_size: ranks.len(),
                ..opts.clone()
            };
            let at = format!("ranks[{rank}]");
            match sources {
                TrainShards::Single(shards) if st.sources.is_empty() => {
                    let bounds = Bounds {
                        shards: shards.len(),
                        max_replay,
                    };
                    no.extend(st.problems(&at, &o, bounds));
                }
                TrainShards::Mixture(m) if st.sources.len() == m.len() => {
                    if st.emitted >= MAX_COUNT {
                        no.push(format!(
                            "{at}.emitted = {}: more than any run reaches (2^53)",
                            st.emitted
                        ));
                    }
                    if st.replay > max_replay {
                        no.push(format!(
                            "{at}.replay = {}: the loader reads at most one batch ({max_replay}) ahead of a saved position",
                            st.replay
                        ));
                    }
                    for (i, (c, s)) in m.iter().zip(&st.sources).enumerate() {
                        // A source's own position is saved between draws: nothing to replay.
                        let bounds = Bounds {
                            shards: c.shards.len(),
                            max_replay: 0,
                        };
                        no.extend(s.problems(&format!("{at}.sources[{i}]"), &o, bounds));
                    }
                }
                _ => {}
            }
        }
        no
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

    /// `data.strict` for a mixture: a source that gives no usable sample for a shuffle
    /// buffer's worth of draws stops the loader instead of a warning (see [`SourceWatch`]).
    pub fn strict_sources(mut self, strict: bool) -> Self {
        if let SampleStream::Mixture(m) = &mut self {
            m.strict = strict;
        }
        self
    }

    /// The watch over a mixture's sources; `None` for a single stream (whose unusable samples
    /// the loader's patience covers).
    pub fn source_watch(&self) -> Option<SourceWatch> {
        let SampleStream::Mixture(m) = self else {
            return None;
        };
        let buffer = m.sources.first().map_or(0, ShardStream::shuffle_buffer);
        Some(SourceWatch::new(m.names.clone(), buffer, m.strict))
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
    /// `data.sources[i] (name)`, by source, for messages.
    names: Vec<String>,
    /// See [`SampleStream::strict_sources`].
    strict: bool,
}

impl MixedStream {
    pub fn new(sources: &[Component], opts: StreamOptions) -> Result<Self, DataError> {
        if sources.is_empty() {
            return Err(DataError::NoShards("the mixture has no source".into()));
        }
        let weights: Vec<f64> = sources.iter().map(|s| s.weight).collect();
        let mut acc = 0.0;
        let cumulative = shares(&weights)
            .map_err(|(i, w)| {
                let e = DataError::NoShards(format!("weight {w}; weights must be finite and > 0"));
                named(&sources[i].name, i, e)
            })?
            .into_iter()
            .map(|share| {
                acc += share;
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
            names: sources
                .iter()
                .enumerate()
                .map(|(i, s)| source_name(&s.name, i))
                .collect(),
            strict: false,
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
        if state.emitted >= MAX_COUNT {
            return Err(DataError::Resume(format!(
                "the saved draw count {} is more than any run reaches (2^53)",
                state.emitted
            )));
        }
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
        sample.source = i;
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

/// Each weight's share of their sum, computed so that no sum overflows: the weights are divided
/// by the largest first (1e308 and 1e308 are half and half). The first weight that is not
/// finite and > 0 is returned as (index, weight).
pub fn shares(weights: &[f64]) -> Result<Vec<f64>, (usize, f64)> {
    if let Some((i, w)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !(w.is_finite() && **w > 0.0))
    {
        return Err((i, *w));
    }
    let max = weights.iter().copied().fold(0.0, f64::max);
    // Each term is at most 1, so the sum is at most the count: finite, and at least 1.
    let total: f64 = weights.iter().map(|w| w / max).sum();
    Ok(weights.iter().map(|w| w / max / total).collect())
}

/// `data.sources[i] (name)`, or `data.sources[i]` for a source without a name.
fn source_name(name: &str, i: usize) -> String {
    if name.is_empty() {
        format!("data.sources[{i}]")
    } else {
        format!("data.sources[{i}] ({name})")
    }
}

fn named(name: &str, i: usize, e: DataError) -> DataError {
    let what = source_name(name, i);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_near_the_largest_float_share_the_draws_as_small_ones_do() {
        assert_eq!(shares(&[1e308, 1e308]).unwrap(), [0.5, 0.5]);
        assert_eq!(shares(&[3.0, 1.0]).unwrap(), [0.75, 0.25]);
        assert_eq!(shares(&[1.0, f64::INFINITY]), Err((1, f64::INFINITY)));
        assert_eq!(shares(&[0.0, 1.0]), Err((0, 0.0)));
        let component = |name: &str| Component {
            name: name.into(),
            shards: vec![Shard::File(format!("{name}.tar"))],
            weight: 1e308,
        };
        let opts = StreamOptions {
            order: Order::Resampled,
            shuffle_buffer: 4,
            seed: 7,
            rank: 0,
            world_size: 1,
        };
        let mut m = MixedStream::new(&[component("a"), component("b")], opts).unwrap();
        let mut firsts = 0;
        for _ in 0..80 {
            firsts += usize::from(m.pick() == 0);
            m.drawn += 1;
        }
        assert!(
            (38..=42).contains(&firsts),
            "{firsts} of 80 from the first source"
        );
    }
}

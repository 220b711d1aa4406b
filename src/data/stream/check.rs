//! The numbers of a saved [`StreamState`], checked against the stream they claim to continue
//! before any of them indexes a shard list, sizes a loop or is incremented: a `state.json`
//! that was damaged or edited is refused with the field and value, never a panic or a hang.
use super::{Order, StreamOptions, StreamState};

/// Larger than any counter a run reaches (2^53 ≈ 9.0e15 samples, shard reads or epochs, also
/// the largest integer every JSON reader holds exactly); a value above it is damage. Keeping
/// counters below it also keeps `+ 1` from wrapping.
pub const MAX_COUNT: u64 = 1 << 53;

const TOO_LARGE: &str = "more than any run reaches (2^53)";

/// What a saved position may hold for one rank of a stream.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Shards in the list the stream reads.
    pub shards: usize,
    /// Samples the loader may have read ahead of the position (`replay`): one batch of a rank.
    pub max_replay: u64,
}

impl StreamState {
    /// Every number of this position (rank `opts.rank` of `opts.world_size`) that no stream
    /// over `bounds.shards` shards could have saved, as `field = value: why`, the field named
    /// from `at` (e.g. `ranks[0]`). Empty when the position is one the stream could be at.
    pub fn problems(&self, at: &str, opts: &StreamOptions, bounds: Bounds) -> Vec<String> {
        let mut no = Vec::new();
        let mut say = |field: &str, value: String, why: String| {
            no.push(format!("{at}.{field} = {value}: {why}"));
        };
        let counters = [
            ("epoch".to_string(), self.epoch),
            ("offset".to_string(), self.offset),
            ("emitted".to_string(), self.emitted),
        ];
        let skips = self
            .skipped
            .0
            .iter()
            .map(|(r, n)| (format!("skipped.{r:?}"), *n));
        for (field, v) in counters.into_iter().chain(skips) {
            if v >= MAX_COUNT {
                say(&field, v.to_string(), TOO_LARGE.into());
            }
        }
        if self.replay > bounds.max_replay {
            say(
                "replay",
                self.replay.to_string(),
                format!(
                    "the loader reads at most one batch ({}) ahead of a saved position",
                    bounds.max_replay
                ),
            );
        }
        let (n, w, r) = (bounds.shards, opts.world_size.max(1), opts.rank);
        let own = n / w + usize::from(r < n % w);
        let reads = format!("rank {r} of {w} reads {own} of the {n} shard(s)");
        // Epoch mode reads cursors 0..own each epoch and a single pass 0..own once (then rests
        // at own); resampled draws count up without a bound of their own.
        let read_ok = |c: u64| match opts.order {
            Order::Epoch | Order::Once => c < own as u64,
            Order::Resampled => c < MAX_COUNT,
        };
        let at_end = opts.order == Order::Once && self.cursor == own as u64;
        if !read_ok(self.cursor) && !at_end {
            say(
                "cursor",
                self.cursor.to_string(),
                format!("{reads} per epoch ({:?} order)", opts.order),
            );
        }
        let held = opts.shuffle_buffer.max(1);
        if self.buffer.len() > held {
            say(
                "buffer",
                format!("[{} positions]", self.buffer.len()),
                format!("data.shuffle_buffer holds {held}"),
            );
        }
        for (i, p) in self.buffer.iter().enumerate() {
            let bad = if p.carried {
                (p.cursor >= self.carry.len() as u64).then(|| {
                    let units = self.carry.len();
                    format!("refers to carried-over unit {} of {units}", p.cursor)
                })
            } else if !read_ok(p.cursor) {
                Some(format!("its shard read {} is outside: {reads}", p.cursor))
            } else if p.offset >= MAX_COUNT || p.epoch > self.epoch {
                Some(format!(
                    "sample {} of epoch {} is not one the stream (at epoch {}) has read",
                    p.offset, p.epoch, self.epoch
                ))
            } else {
                None
            };
            if let Some(why) = bad {
                say(&format!("buffer[{i}]"), format!("{p:?}"), why);
            }
        }
        for (i, u) in self.carry.iter().enumerate() {
            if u.shard >= n {
                say(
                    &format!("carry[{i}].shard"),
                    u.shard.to_string(),
                    format!("the list has {n} shard(s)"),
                );
            }
            if u.from >= MAX_COUNT || u.epoch >= MAX_COUNT || u.to.is_some_and(|t| t < u.from) {
                say(
                    &format!("carry[{i}]"),
                    format!("{u:?}"),
                    "not a run of samples of one shard".into(),
                );
            }
        }
        if self.carry_next > self.carry.len() as u64 {
            say(
                "carry_next",
                self.carry_next.to_string(),
                format!("the position carries {} unit(s)", self.carry.len()),
            );
        }
        no
    }
}

#[cfg(test)]
mod tests {
    use super::super::SamplePos;
    use super::*;

    fn opts(order: Order) -> StreamOptions {
        StreamOptions {
            order,
            shuffle_buffer: 4,
            seed: 1,
            rank: 1,
            world_size: 2,
        }
    }

    const BOUNDS: Bounds = Bounds {
        shards: 5,
        max_replay: 8,
    };

    #[test]
    fn a_position_a_stream_could_be_at_passes() {
        let mut s = StreamState {
            epoch: 3,
            cursor: 1,
            emitted: 100,
            replay: 8,
            ..Default::default()
        };
        s.buffer.push(SamplePos {
            epoch: 3,
            cursor: 1,
            offset: 7,
            carried: false,
        });
        assert_eq!(
            s.problems("ranks[1]", &opts(Order::Epoch), BOUNDS),
            [] as [String; 0]
        );
        s.cursor = 1_000_000;
        assert_eq!(
            s.problems("r", &opts(Order::Resampled), BOUNDS),
            [] as [String; 0]
        );
    }

    #[test]
    fn every_number_outside_what_the_stream_could_save_is_named() {
        // Rank 1 of 2 over 5 shards reads 2 of them per epoch.
        let s = StreamState {
            epoch: u64::MAX,
            cursor: 1_000_000_000,
            replay: 9,
            carry_next: 3,
            buffer: vec![
                SamplePos {
                    epoch: 0,
                    cursor: 2,
                    offset: 0,
                    carried: false,
                };
                5
            ],
            ..Default::default()
        };
        let no = s.problems("ranks[1]", &opts(Order::Epoch), BOUNDS);
        let all = no.join("\n");
        for said in [
            "ranks[1].epoch = 18446744073709551615: more than any run reaches",
            "ranks[1].cursor = 1000000000: rank 1 of 2 reads 2 of the 5 shard(s) per epoch",
            "ranks[1].replay = 9: the loader reads at most one batch (8) ahead",
            "ranks[1].buffer = [5 positions]: data.shuffle_buffer holds 4",
            "ranks[1].buffer[0] = ",
            "ranks[1].carry_next = 3: the position carries 0 unit(s)",
        ] {
            assert!(all.contains(said), "{said:?} missing from:\n{all}");
        }
    }
}

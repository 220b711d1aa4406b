//! Elastic resume: continuing a stream that ranks of one world size saved, with another.
//!
//! Epoch mode: each old rank's stream is restored as it was (its rank, its world size), and what
//! it had not yet emitted of the epochs it had started — the samples in its shuffle buffer, the
//! rest of its open shard (or of its own carried-over share), its remaining shards of those
//! epochs — is pooled and dealt to the new ranks round-robin: buffered samples one at a time,
//! then the open shards' rests, then whole shards in epoch order. Each new rank drains its share
//! first ([`StreamState::carry`]) and then reads the next epoch split over the new world size,
//! so every sample of the interrupted epoch is read exactly once. Old ranks may have stopped in
//! different epochs (a rank with fewer shards runs through epochs faster): every old rank's
//! share of every epoch up to the furthest one started is drained before the new epoch.
//!
//! Resampled mode owes nothing: each new rank starts a fresh stream whose draws are re-derived
//! from (seed, resume step), deterministic but not the sequence an unresized job would read.
use super::{CarryUnit, Order, ShardStream, StreamOptions, StreamState};
use crate::data::DataError;
use crate::data::spec::Shard;

/// What one old rank had not emitted yet, before its whole shards are listed.
struct Owed {
    buffered: Vec<CarryUnit>,
    partial: Vec<CarryUnit>,
    /// The first own shard read (epoch, cursor) it had not opened.
    from: (u64, u64),
    /// The first epoch of which it had read none of its own shards.
    unstarted: u64,
}

impl ShardStream {
    fn owed(&self) -> Owed {
        let unit = |epoch, shard, from, to| CarryUnit {
            epoch,
            shard,
            from,
            to,
        };
        let buffered = self
            .buffer
            .iter()
            .map(|(p, _, _)| {
                let shard = self.shard_index_of(p);
                unit(p.epoch, shard, p.offset, Some(p.offset + 1))
            })
            .collect();
        let mut partial = vec![];
        let (epoch, mut cursor) = (self.epoch, self.cursor);
        let unstarted;
        if self.reading_carry() {
            let mut rest = self.carry[self.carry_next..].to_vec();
            if let Some(open) = &self.current {
                rest[0].from = open.offset;
            }
            partial.extend(rest);
            unstarted = epoch;
        } else if let Some(open) = &self.current {
            partial.push(unit(
                epoch,
                self.shard_index(epoch, cursor),
                open.offset,
                None,
            ));
            cursor += 1;
            unstarted = epoch + 1;
        } else {
            unstarted = if cursor > 0 { epoch + 1 } else { epoch };
        }
        Owed {
            buffered,
            partial,
            from: (epoch, cursor),
            unstarted,
        }
    }
}

/// The state from which the rank `opts.rank` of a job of `opts.world_size` ranks continues the
/// stream whose ranks saved `old` (by rank) after `step` training steps.
pub fn resize(
    shards: &[Shard],
    opts: &StreamOptions,
    old: &[StreamState],
    step: u64,
) -> Result<StreamState, DataError> {
    if old.is_empty() {
        return Err(DataError::Resume(
            "the checkpoint holds no rank's data position".into(),
        ));
    }
    let old_opts = |rank| StreamOptions {
        rank,
        world_size: old.len(),
        ..opts.clone()
    };
    let mut state = ShardStream::new(shards.to_vec(), opts.clone())?.state();
    state.emitted = old.iter().map(|s| s.emitted).max().unwrap_or(0);
    if opts.rank == 0 {
        // The job's skip counts live on in rank 0, as the log reports rank 0's.
        for s in old {
            for (r, n) in &s.skipped.0 {
                *state.skipped.0.entry(*r).or_default() += n;
            }
        }
    }
    match opts.order {
        Order::Resampled => {
            for (rank, s) in old.iter().enumerate() {
                if ShardStream::new(shards.to_vec(), old_opts(rank))?.fingerprint != s.fingerprint {
                    return Err(changed());
                }
            }
            state.salt = step.max(1);
            Ok(state)
        }
        Order::Epoch => deal_epoch(shards, opts, old, state),
        Order::Once => Err(DataError::Resume(
            "a single ordered pass is not resumed with another world size".into(),
        )),
    }
}

/// [`resize`] of an epoch-ordered stream: what the old ranks still owed of their epochs (their
/// buffered and partly read samples, then their unread shards, in the order they would have
/// read them) dealt round-robin to the new ranks as carried-over units.
fn deal_epoch(
    shards: &[Shard],
    opts: &StreamOptions,
    old: &[StreamState],
    mut state: StreamState,
) -> Result<StreamState, DataError> {
    let old_opts = |rank| StreamOptions {
        rank,
        world_size: old.len(),
        ..opts.clone()
    };
    // One old stream at a time: each holds its shuffle buffer's samples in memory.
    let mut owed = Vec::with_capacity(old.len());
    for (rank, s) in old.iter().enumerate() {
        let stream =
            ShardStream::restore(shards.to_vec(), old_opts(rank), s).map_err(|e| match e {
                DataError::Resume(_) => changed(),
                e => e,
            })?;
        owed.push(stream.owed());
    }
    let until = owed.iter().map(|o| o.unstarted).max().unwrap_or(0);
    let mut pool: Vec<CarryUnit> = owed.iter().flat_map(|o| o.buffered.clone()).collect();
    pool.extend(owed.iter().flat_map(|o| o.partial.clone()));
    let mut whole = vec![];
    for (rank, o) in owed.iter().enumerate() {
        let then = ShardStream::new(shards.to_vec(), old_opts(rank))?;
        let per_epoch = then.rank_shards() as u64;
        let (mut epoch, mut cursor) = o.from;
        while epoch < until {
            while cursor < per_epoch {
                let shard = then.shard_index(epoch, cursor);
                whole.push((epoch, cursor, rank, shard));
                cursor += 1;
            }
            epoch += 1;
            cursor = 0;
        }
    }
    // The global order the old ranks read them in: by epoch, then read, then rank.
    whole.sort();
    pool.extend(whole.into_iter().map(|(epoch, _, _, shard)| CarryUnit {
        epoch,
        shard,
        from: 0,
        to: None,
    }));
    let w = opts.world_size;
    state.carry = pool
        .into_iter()
        .enumerate()
        .filter(|(j, _)| j % w == opts.rank)
        .map(|(_, u)| u)
        .collect();
    state.epoch = until;
    Ok(state)
}

fn changed() -> DataError {
    DataError::Resume(
        "the shard list, data mode, shuffle buffer or seed changed since the checkpoint was saved"
            .into(),
    )
}

//! What the training loop needs from the job around it: joining it, a rank's view of the config,
//! agreeing on when to stop or checkpoint, and collecting every rank's data position for checkpoints.
use super::{Dist, DistEnv, DistError, ReduceOp};
use crate::checkpoint::TrainState;
use crate::config::{Config, DeviceSpec};
use crate::data::stream::StreamState;
use std::time::Duration;
use tch::Tensor;

/// Every rank's stream position in a checkpoint, by rank (`state.data` alone for one process).
pub fn saved_stream_states(state: &TrainState) -> Result<Vec<StreamState>, DistError> {
    if state.world_size <= 1 {
        return Ok(vec![state.data.clone()]);
    }
    if state.rank_data.len() != state.world_size {
        return Err(DistError::Setup(format!(
            "the checkpoint's state.json has {} data position(s) for a run of {} processes",
            state.rank_data.len(),
            state.world_size
        )));
    }
    Ok(state.rank_data.clone())
}

/// Joins the job the environment describes (torchrun's variables), or runs alone without them,
/// and returns this rank's config: on a GPU rank i takes `cuda:LOCAL_RANK`, and `run.threads = 0`
/// ("all cores") shares the node's cores among its ranks instead of oversubscribing them.
pub fn join_from_env(cfg: &Config) -> Result<(Dist, Config), DistError> {
    let Some(env) = DistEnv::from_env()? else {
        return Ok((Dist::single(), cfg.clone()));
    };
    let mut cfg = cfg.clone();
    if cfg.run.device.resolve().is_cuda() {
        cfg.run.device = DeviceSpec::Cuda(env.local_rank);
    }
    if cfg.run.threads == 0 {
        let cores = crate::runtime::cores();
        cfg.run.threads = (cores / env.local_world_size).max(1);
    }
    if cfg.optim.batch_size % env.world_size != 0 {
        return Err(DistError::Setup(format!(
            "optim.batch_size = {} must be divisible by the number of processes ({}): it is the \
             global contrastive batch, split evenly over ranks",
            cfg.optim.batch_size, env.world_size
        )));
    }
    let timeout = Duration::from_secs(cfg.dist.timeout_s);
    let dist = Dist::join(&env, cfg.run.device.resolve(), timeout)?;
    if dist.is_main() {
        tracing::info!(
            "process group of {} ranks joined ({} per node), {} pairs per rank",
            dist.world_size,
            dist.local_world_size,
            cfg.optim.batch_size / dist.world_size
        );
    }
    Ok((dist, cfg))
}

/// What the ranks decide together after a step. Every rank must act on the same decision at
/// the same step, or the next collective would pair up wrongly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Stop the run: any rank was asked to (a signal may reach only some of them).
    pub stop: bool,
    /// Write a checkpoint now: rank 0's decision (its clock says `checkpoint.every_minutes`
    /// have passed); the other ranks' clocks are not consulted.
    pub checkpoint: bool,
}

impl Dist {
    /// The [`Agreement`] of all ranks, each bringing its own view; waits for the collective.
    pub fn agree(&self, mine: Agreement) -> Result<Agreement, DistError> {
        Ok(Self::vote_result(&self.start_vote(mine)?))
    }

    /// Starts the vote of [`agree`](Self::agree) without waiting for it: the returned tensor
    /// holds, once the collective is done, how many ranks asked to stop and whether rank 0
    /// asked for a checkpoint (on a GPU, reading it waits for everything queued before it).
    pub fn start_vote(&self, mine: Agreement) -> Result<Tensor, DistError> {
        let checkpoint = mine.checkpoint && self.is_main();
        let t = Tensor::from_slice(&[i64::from(mine.stop), i64::from(checkpoint)])
            .to_device(self.device);
        if let Some(g) = &self.group {
            g.all_reduce(&t, ReduceOp::Sum)?;
        }
        Ok(t)
    }

    /// The decision in a vote from [`start_vote`](Self::start_vote).
    pub fn vote_result(vote: &Tensor) -> Agreement {
        let counts = Vec::<i64>::try_from(vote.to_device(tch::Device::Cpu))
            .expect("a vote is an int64 vector");
        Agreement {
            stop: counts[0] > 0,
            checkpoint: counts[1] > 0,
        }
    }

    /// Records every rank's data position in `state` (rank 0 writes the checkpoint, but resuming
    /// must continue each rank's stream).
    pub fn collect_stream_states(&self, state: &mut TrainState) -> Result<(), DistError> {
        state.world_size = self.world_size;
        if self.group.is_none() {
            state.rank_data.clear();
            return Ok(());
        }
        let mine = serde_json::to_vec(&state.data).expect("a stream state serializes");
        state.rank_data = self
            .all_gather_bytes(&mine)?
            .iter()
            .map(|b| serde_json::from_slice(b).expect("ranks send serialized stream states"))
            .collect();
        Ok(())
    }

    /// This rank's stream position in a checkpoint written by a run of as many ranks as this
    /// job (with another number, see [`saved_stream_states`]).
    pub fn stream_state_of(&self, state: &TrainState) -> Result<StreamState, DistError> {
        if state.world_size != self.world_size {
            return Err(DistError::Setup(format!(
                "the checkpoint was written by a run of {} process(es) and this run has {}; \
                 its data positions are re-partitioned, not taken by rank",
                state.world_size, self.world_size
            )));
        }
        if self.world_size == 1 {
            return Ok(state.data.clone());
        }
        state.rank_data.get(self.rank).cloned().ok_or_else(|| {
            DistError::Setup(format!(
                "the checkpoint's state.json has no data position for rank {}",
                self.rank
            ))
        })
    }
}

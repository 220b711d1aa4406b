//! What the training loop needs from the job around it: agreeing, every rank at the same step,
//! on when to stop or checkpoint. (Which rank trains on what is the run plan's business, in
//! `train`; this module knows nothing of training state.)
use super::Dist;
use super::{DistError, ReduceOp};
use tch::Tensor;

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
}

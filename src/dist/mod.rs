//! Data-parallel training over several processes on PyTorch's c10d (Gloo for CPU tensors, NCCL
//! for CUDA tensors), launched like `torchrun`.
//!
//! - [`env`]: the torchrun environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, ...).
//! - [`group`]: the C++ binding — a `TCPStore` rendezvous, a process group and its collectives.
//! - [`Dist`]: this process's place in the job and its collectives; a job of one process has
//!   identity collectives, so the training step (`train::step`) has one code path for 1..N ranks.
//! - `grads`: gradients averaged over ranks in bucketed flat buffers.
//! - [`launch`]: `cliptrain launch`, which starts the local ranks and supervises them.
mod agree;
mod env;
mod grads;
pub mod group;
pub mod launch;

pub use agree::Agreement;
pub use env::DistEnv;
pub use grads::GradSync;
pub use group::{Backend, ProcessGroup, ReduceOp};

use std::time::Duration;
use tch::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("{var} = {value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "rank {rank} of {world_size} could not join the process group at {addr}:{port}: {msg} \
         (are all ranks started, with the same MASTER_ADDR/MASTER_PORT, within dist.timeout_s?)"
    )]
    Init {
        addr: String,
        port: u16,
        rank: usize,
        world_size: usize,
        msg: String,
    },
    #[error(
        "{op} failed on rank {rank} of {world_size}: {msg}. Another rank has probably died or \
         stopped responding (dist.timeout_s = {timeout_s})"
    )]
    Collective {
        op: &'static str,
        rank: usize,
        world_size: usize,
        timeout_s: f64,
        msg: String,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Launch(String),
}

/// This process's place in the job: a single process, or one rank of a process group.
pub struct Dist {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// Ranks on this host, to share its CPU cores.
    pub local_world_size: usize,
    /// Where this rank's tensors (and so its collectives' buffers) live.
    device: Device,
    group: Option<ProcessGroup>,
}

impl Dist {
    /// A job of one process: every collective is the identity.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            device: Device::Cpu,
            group: None,
        }
    }

    /// Joins the process group described by `env`, for tensors on `device`.
    pub fn join(env: &DistEnv, device: Device, timeout: Duration) -> Result<Self, DistError> {
        let backend = Backend::for_device(device);
        if !backend.compiled_in() {
            return Err(DistError::Setup(format!(
                "tensors on {device:?} need the NCCL process group, and this cliptrain was built \
                 without it; rebuild with CLIPTRAIN_NCCL=1 (docs/distributed.md, \"NCCL\") \
                 or train on the CPU with run.device = \"cpu\""
            )));
        }
        let group = ProcessGroup::join(
            &env.master_addr,
            env.master_port,
            env.rank,
            env.world_size,
            backend,
            timeout,
        )?;
        Ok(Self {
            rank: env.rank,
            world_size: env.world_size,
            local_rank: env.local_rank,
            local_world_size: env.local_world_size,
            device,
            group: Some(group),
        })
    }

    /// Rank 0 alone logs and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The process group, when this process is part of one.
    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// Waits for every rank (no-op for a single process).
    pub fn barrier(&self) -> Result<(), DistError> {
        self.group.as_ref().map_or(Ok(()), ProcessGroup::barrier)
    }

    /// Every rank's bytes by rank (a single process gets its own back).
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        match &self.group {
            Some(g) => g.all_gather_bytes(bytes, self.device),
            None => Ok(vec![bytes.to_vec()]),
        }
    }

    /// Every rank's `t` (same shape on all) concatenated along dim 0 in rank order; one
    /// process gets `t` itself.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        match &self.group {
            Some(g) => g.all_gather(t),
            None => Ok(t.shallow_clone()),
        }
    }

    /// Reduces `t` in place over all ranks; one process leaves it as it is.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        self.group.as_ref().map_or(Ok(()), |g| g.all_reduce(t, op))
    }

    /// The device this rank computes on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Copies rank 0's values of `tensors` to every rank, so all start from the same weights
    /// whatever their RNG did.
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        tch::no_grad(|| {
            for t in tensors {
                let buf = t.detach().contiguous();
                g.broadcast(&buf, 0)?;
                if buf.data_ptr() != t.data_ptr() {
                    t.detach().copy_(&buf);
                }
            }
            Ok(())
        })
    }
}

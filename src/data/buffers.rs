//! Host memory for batch tensors: recycled pageable buffers for CPU runs, pinned memory from
//! libtorch's caching host allocator for CUDA runs.
//!
//! Why pinned buffers are not recycled by hand: a `non_blocking` copy from pinned memory is still
//! in flight when the call returns, so the loader must not overwrite the buffer until the device
//! has read it — and "nothing else holds the tensor" (what recycling checks) says nothing about
//! that. libtorch's caching host allocator does know: the CUDA copy records an event on the
//! block, and a freed block is handed out again only once its events have completed. So on CUDA
//! every batch is allocated from that allocator and simply dropped when done; the allocator
//! caches the blocks, so there is no `cudaHostAlloc` per step after the first few batches.
use super::DataError;
use tch::{Device, Kind, Tensor};

/// Where batch tensors live on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMemory {
    /// Ordinary memory, buffers reused once nothing references them (CPU runs: no copy).
    Pageable,
    /// Page-locked memory from libtorch's caching host allocator, so host-to-device copies can
    /// be asynchronous (CUDA runs).
    Pinned,
}

impl HostMemory {
    /// Pinned for a CUDA device, pageable otherwise.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => HostMemory::Pinned,
            _ => HostMemory::Pageable,
        }
    }
}

/// Hands out the producer's batch tensors.
pub(crate) struct BatchBuffers {
    memory: HostMemory,
    /// Pageable image tensors handed out before, reused once nothing else holds them.
    recycled: Vec<Tensor>,
    /// How many recycled buffers to keep.
    keep: usize,
}

impl BatchBuffers {
    pub(crate) fn new(memory: HostMemory, keep: usize) -> Self {
        Self {
            memory,
            recycled: Vec::new(),
            keep,
        }
    }

    /// A u8 tensor for the next batch's images. Pageable: a recycled one that nothing
    /// references any more (no batch, view or autograd-saved input), else a new one; recycling
    /// spares the kernel zeroing fresh pages for every batch (measured: ~17% of the loader's CPU
    /// at 224 px with float batches). Pinned: always from the caching host allocator (module
    /// docs).
    pub(crate) fn images(&mut self, shape: [i64; 4]) -> Result<Tensor, DataError> {
        if self.memory == HostMemory::Pinned {
            return pinned(&shape, Kind::Uint8);
        }
        let free = self
            .recycled
            .iter()
            .position(|t| t.size() == shape && crate::shim::is_exclusive(t));
        if let Some(i) = free {
            return Ok(self.recycled[i].shallow_clone());
        }
        let t = Tensor::empty(shape, (Kind::Uint8, Device::Cpu));
        if self.recycled.len() >= self.keep {
            drop(self.recycled.remove(0));
        }
        self.recycled.push(t.shallow_clone());
        Ok(t)
    }

    /// `ids` as a `[n, ctx]` int64 tensor, pinned when batches are: a copy from pageable memory
    /// waits for the device to go idle first, which would undo copying ahead.
    pub(crate) fn tokens(&self, ids: &[i64], n: i64, ctx: i64) -> Result<Tensor, DataError> {
        let t = Tensor::from_slice(ids).view([n, ctx]);
        if self.memory == HostMemory::Pageable {
            return Ok(t);
        }
        let mut p = pinned(&[n, ctx], Kind::Int64)?;
        p.f_copy_(&t)?;
        Ok(p)
    }
}

fn pinned(shape: &[i64], kind: Kind) -> Result<Tensor, DataError> {
    crate::shim::empty_pinned(shape, kind)
        .map_err(|e| DataError::Loader(format!("cannot allocate a pinned batch tensor: {e}")))
}

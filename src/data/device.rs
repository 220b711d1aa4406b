//! The loader's batches on the compute device, one batch ahead: when the trainer takes batch N,
//! the copy of batch N+1 is already issued, so the host never waits for a transfer.
//!
//! Copies are `non_blocking` from pinned memory (see [`super::buffers`]) on the current CUDA
//! stream: the step that uses a batch is queued on the same stream after its copy, so it needs no
//! event, and the host tensors may be dropped at once because the caching host allocator keeps
//! their blocks until the copy is done. On the CPU the "copy" returns the same tensors.
//!
//! A batch travels whole, with the stream state the loader attached to it, so the state saved
//! with a step is still the state after the batch that step trained on (exact resume).
use super::DataError;
use super::loader::{Batch, Loader};
use tch::{Device, Tensor};

type Fetched = Result<Option<Batch>, DataError>;

/// A [`Loader`] whose batches' `images` and `tokens` are on `device`.
pub struct DeviceBatches {
    loader: Loader,
    device: Device,
    /// The next batch (copy issued), the end of the stream, or the error that ended it: given
    /// out at the next call, so a failure surfaces at the same step as without prefetching.
    ahead: Option<Fetched>,
}

impl DeviceBatches {
    pub fn new(loader: Loader, device: Device) -> Self {
        Self {
            loader,
            device,
            ahead: None,
        }
    }

    /// The next batch on the device; `Ok(None)` when a single-pass stream is over. Blocks until
    /// the loader has the batch after it too (its copy is issued before this returns).
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        let current = match self.ahead.take() {
            Some(fetched) => fetched?,
            None => self.fetch()?,
        };
        if current.is_some() {
            self.ahead = Some(self.fetch());
        }
        Ok(current)
    }

    /// The loader's next batch, its copy to the device issued.
    fn fetch(&mut self) -> Fetched {
        let Some(mut b) = self.loader.next_batch()? else {
            return Ok(None);
        };
        b.images = to_device(&b.images, self.device)?;
        b.tokens = to_device(&b.tokens, self.device)?;
        Ok(Some(b))
    }
}

/// `t` on `device`, asynchronously when `t` is pinned; `t` itself when it is there already.
fn to_device(t: &Tensor, device: Device) -> Result<Tensor, DataError> {
    Ok(t.f_to_device_(device, t.kind(), true, false)?)
}

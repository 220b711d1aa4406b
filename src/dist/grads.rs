//! Gradients averaged over ranks in bucketed flat buffers: the collective a data-parallel step
//! ends with.
use super::{Dist, DistError, ReduceOp};
use tch::Tensor;

/// Averages parameter gradients over ranks in flat buffers of about `bucket_bytes`: one
/// collective per bucket instead of one per tensor (latency dominates for small tensors), every
/// bucket in flight at once so Gloo's worker threads overlap the transfers with each other and
/// with the flattening of the next bucket.
pub struct GradSync {
    params: Vec<Tensor>,
    bucket_bytes: usize,
}

impl GradSync {
    /// `params` in the same order on every rank (sorted by name).
    pub fn new(params: Vec<Tensor>, bucket_bytes: usize) -> Self {
        Self {
            params,
            bucket_bytes: bucket_bytes.max(1),
        }
    }

    /// Replaces each defined gradient with its mean over ranks. Parameters without a gradient
    /// are skipped; every rank runs the same model and loss, so they agree on which those are.
    /// In a job of one process the mean is the gradient itself: nothing is touched.
    pub fn average(&self, dist: &Dist) -> Result<(), DistError> {
        let Some(group) = dist.group() else {
            return Ok(());
        };
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let mut buckets: Vec<Vec<&Tensor>> = Vec::new();
        let mut size = 0usize;
        for g in &grads {
            let bytes = g.numel() * g.kind().elt_size_in_bytes();
            let same_kind = buckets
                .last()
                .and_then(|b| b.first())
                .is_some_and(|f| f.kind() == g.kind() && f.device() == g.device());
            if buckets.is_empty() || !same_kind || size + bytes > self.bucket_bytes {
                buckets.push(Vec::new());
                size = 0;
            }
            buckets.last_mut().expect("pushed above").push(g);
            size += bytes;
        }
        tch::no_grad(|| {
            let mut in_flight = Vec::with_capacity(buckets.len());
            for bucket in &buckets {
                let flat: Vec<Tensor> = bucket.iter().map(|g| g.flatten(0, -1)).collect();
                let flat = Tensor::cat(&flat, 0);
                let work = group.all_reduce_start(&flat, ReduceOp::Avg)?;
                in_flight.push((flat, work));
            }
            for (bucket, (flat, work)) in buckets.iter().zip(in_flight) {
                group.wait(work)?;
                let mut offset = 0i64;
                for g in bucket {
                    let n = g.numel() as i64;
                    g.shallow_clone()
                        .copy_(&flat.narrow(0, offset, n).view_as(g));
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

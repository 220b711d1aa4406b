//! Pixels from the decode workers to the model: batches hold 8-bit RGB (CHW), and the per-channel
//! normalisation is one tensor op on the compute device.
//!
//! Keeping batches in u8 until the device makes them a quarter of the size of float batches on
//! the host, in the loader's queue, in the host-to-device copy and in the recycled buffers; the
//! normalisation then runs where the model does (on a GPU, a single fused kernel). On the CPU it
//! measured as fast as normalising in the decode workers (docs/benchmarks.md), so there is one
//! path for every device.
use tch::{Device, Kind, Tensor};

/// `pixels` (HWC, 3 bytes a pixel) into `dst` (CHW, the same number of bytes).
pub(crate) fn hwc_to_chw(pixels: &[u8], dst: &mut [u8]) {
    let plane = dst.len() / 3;
    let (r, rest) = dst.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (k, px) in pixels.chunks_exact(3).enumerate() {
        r[k] = px[0];
        g[k] = px[1];
        b[k] = px[2];
    }
}

/// CLIP's image normalisation, `(x / 255 − mean) / std` per channel, as one affine map
/// `x · scale + bias` of a u8 batch already on the compute device.
pub struct PixelNorm {
    /// `[1, 3, 1, 1]` float32: 1 / (255 · std).
    scale: Tensor,
    /// `[1, 3, 1, 1]` float32: −mean / std.
    bias: Tensor,
}

impl PixelNorm {
    /// The normalisation for `mean`/`std` (the config's `data.image_mean`/`image_std`), with its
    /// two small tensors on `device`.
    pub fn new(mean: [f64; 3], std: [f64; 3], device: Device) -> Self {
        let per_channel = |f: &dyn Fn(usize) -> f64| {
            let v: Vec<f32> = (0..3).map(|c| f(c) as f32).collect();
            Tensor::from_slice(&v).view([1, 3, 1, 1]).to_device(device)
        };
        Self {
            scale: per_channel(&|c| 1.0 / (255.0 * std[c])),
            bias: per_channel(&|c| -mean[c] / std[c]),
        }
    }

    /// `[B, 3, S, S]` u8 → normalised float32, on the device `images` is on.
    pub fn apply(&self, images: &Tensor) -> Tensor {
        debug_assert_eq!(images.kind(), Kind::Uint8);
        if images.device().is_cuda() {
            // One kernel: type promotion makes the result float, and CUDA kernels cast their
            // u8 operand on the fly.
            return self.bias.addcmul(images, &self.scale);
        }
        // On the CPU ATen would first cast the u8 operand into a temporary float tensor, so the
        // line above allocates (and page-faults in) two batch-sized tensors. Casting once and
        // writing the affine map over the cast in place allocates one.
        let x = images.to_kind(Kind::Float);
        self.bias.addcmul_out(&x, &x, &self.scale)
    }
}

/// Write access to the image slots of a u8 batch tensor being filled by the decode workers.
pub(crate) struct Slots {
    base: usize,
    /// Bytes of one sample: 3 · S · S.
    sample: usize,
    capacity: usize,
}

impl Slots {
    pub(crate) fn new(images: &Tensor) -> Self {
        assert!(images.is_contiguous() && images.kind() == Kind::Uint8);
        let size = images.size();
        Self {
            base: images.data_ptr() as usize,
            sample: (size[1] * size[2] * size[3]) as usize,
            capacity: size[0] as usize,
        }
    }

    /// Slot i as a byte slice.
    ///
    /// # Safety
    /// Slots are disjoint `sample`-byte blocks of a live contiguous u8 tensor; the caller must
    /// not hold two references to the same slot at once (concurrent writers use distinct slots).
    #[allow(clippy::mut_from_ref)]
    unsafe fn slot(&self, i: usize) -> &mut [u8] {
        assert!(i < self.capacity);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut((self.base as *mut u8).add(i * self.sample), self.sample)
        }
    }

    /// HWC pixels → CHW bytes in slot i, while the decoded pixels are still in cache.
    pub(crate) fn write(&self, i: usize, pixels: &[u8]) {
        // SAFETY: each decode task writes only its own sample's slot.
        let dst = unsafe { self.slot(i) };
        hwc_to_chw(pixels, dst);
    }

    pub(crate) fn move_slot(&self, from: usize, to: usize) {
        assert!(from < self.capacity && to < self.capacity);
        if from != to {
            // SAFETY: both ranges lie inside the tensor (checked above); `copy` allows overlap.
            unsafe {
                std::ptr::copy(
                    (self.base as *const u8).add(from * self.sample),
                    (self.base as *mut u8).add(to * self.sample),
                    self.sample,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the decode workers computed before batches became u8: a per-channel table of
    /// `(v / 255 − mean) / std` in f64, rounded to f32.
    fn lut_normalise(pixels: &[u8], mean: [f64; 3], std: [f64; 3]) -> Vec<f32> {
        let mut chw = vec![0u8; pixels.len()];
        hwc_to_chw(pixels, &mut chw);
        let plane = chw.len() / 3;
        chw.iter()
            .enumerate()
            .map(|(k, &v)| {
                let c = k / plane;
                ((v as f64 / 255.0 - mean[c]) / std[c]) as f32
            })
            .collect()
    }

    #[test]
    fn device_normalisation_matches_the_lookup_table() {
        let (mean, std) = (
            [0.48145466, 0.4578275, 0.40821073],
            [0.26862954, 0.26130258, 0.27577711],
        );
        // Every byte value in every channel, as two 16×24 HWC images.
        let pixels: Vec<u8> = (0..2 * 16 * 24 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let expected: Vec<f32> = pixels
            .chunks(16 * 24 * 3)
            .flat_map(|img| lut_normalise(img, mean, std))
            .collect();
        let images = Tensor::zeros([2, 3, 16, 24], (Kind::Uint8, Device::Cpu));
        let slots = Slots::new(&images);
        for (i, img) in pixels.chunks(16 * 24 * 3).enumerate() {
            slots.write(i, img);
        }
        let got = PixelNorm::new(mean, std, Device::Cpu).apply(&images);
        assert_eq!(got.kind(), Kind::Float);
        let want = Tensor::from_slice(&expected).view([2, 3, 16, 24]);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff < 2e-6, "max difference {diff}");
    }

    #[test]
    fn moved_slots_carry_their_pixels() {
        let images = Tensor::zeros([3, 3, 2, 2], (Kind::Uint8, Device::Cpu));
        let slots = Slots::new(&images);
        slots.write(2, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        slots.move_slot(2, 0);
        let first: Vec<u8> = Vec::try_from(images.get(0).flatten(0, -1)).unwrap();
        assert_eq!(first, [1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12]);
    }
}

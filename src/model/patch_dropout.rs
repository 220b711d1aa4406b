//! FLIP's patch dropout (OpenCLIP's `PatchDropout`): a training forward pass keeps a random
//! subset of each image's patch tokens, after the position embeddings are added and before the
//! pre-LayerNorm, and always keeps the class token (SigLIP has none: only patches are drawn).
//! Fewer tokens make every encoder block cheaper; attention is permutation-equivariant and only
//! the class token (or SigLIP's attention-pooling head, itself order-free) reads the result, so
//! the order of the kept tokens does not matter.
//!
//! The draw does not use libtorch's global RNG: which patches image `i` keeps is a hash of
//! `(seed, step, sample)`, with `sample` the image's index in the step's global batch. So a
//! resumed run draws exactly what an uninterrupted one drew, a micro-batched step draws what the
//! whole batch would (feature caching encodes each micro-batch twice and must see the same
//! tokens both times), and turning patch dropout on leaves every other random draw as it was.
use tch::{Device, Kind, Tensor};

/// The key of one training forward pass's draw: image `i` of the batch is sample
/// `first_sample + i` of optimizer step `step` in a run seeded with `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchDraw {
    pub seed: u64,
    pub step: u64,
    pub first_sample: u64,
}

/// Patch tokens kept out of `n` at drop fraction `p`: OpenCLIP's `max(1, int(n · (1 − p)))`.
pub fn kept_patches(n: i64, p: f64) -> i64 {
    ((n as f64 * (1.0 - p)) as i64).clamp(1, n.max(1))
}

/// `x` (`[B, 1 + N, W]`: class token, then N patch tokens; `[B, N, W]` without `class_token`,
/// as SigLIP) with only `kept_patches(N, p)` patch tokens per image, chosen by `draw`; a class
/// token stays first. `p = 0` returns `x`.
pub(crate) fn drop_patches(x: &Tensor, p: f64, draw: PatchDraw, class_token: bool) -> Tensor {
    let (b, t, w) = x
        .size3()
        .expect("patch dropout input is [batch, tokens, width]");
    let cls = i64::from(class_token);
    let n = t - cls;
    if p <= 0.0 || n <= 1 {
        return x.shallow_clone();
    }
    let keep = kept_patches(n, p);
    // The `keep` largest of N i.i.d. uniforms: a uniformly random subset, as OpenCLIP's
    // `randn(...).topk(...)`.
    let (_, idx) = noise(draw, b, n)
        .to_device(x.device())
        .topk(keep, -1, true, true);
    let idx = (idx + cls).unsqueeze(-1).expand([b, keep, w], false);
    let kept = x.gather(1, &idx, false);
    match class_token {
        true => Tensor::cat(&[x.narrow(1, 0, 1), kept], 1),
        false => kept,
    }
}

/// `[b, n]` uniforms in [0, 1), a pure function of the draw's key, the row and the column.
/// f64 with 53 random bits, so ties (whose order topk would decide) do not happen in practice.
fn noise(draw: PatchDraw, b: i64, n: i64) -> Tensor {
    let step_key = mix(mix(draw.seed) ^ draw.step);
    let mut v = Vec::with_capacity((b * n) as usize);
    for i in 0..b as u64 {
        let sample_key = mix(step_key ^ mix(draw.first_sample + i));
        for j in 0..n as u64 {
            let h = mix(sample_key ^ mix(j.wrapping_add(0x5851_f42d_4c95_7f2d)));
            v.push((h >> 11) as f64 / (1u64 << 53) as f64);
        }
    }
    Tensor::from_slice(&v)
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .view([b, n])
}

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAW: PatchDraw = PatchDraw {
        seed: 7,
        step: 3,
        first_sample: 0,
    };

    /// `[b, 1 + n, w]` whose token `t` of image `i` is filled with `1000 i + t`, so every row
    /// says where it came from.
    fn tokens(b: i64, n: i64, w: i64) -> Tensor {
        let id = Tensor::arange(b, (Kind::Float, Device::Cpu)).view([b, 1, 1]) * 1000.0
            + Tensor::arange(n + 1, (Kind::Float, Device::Cpu)).view([1, n + 1, 1]);
        id.expand([b, n + 1, w], false).contiguous()
    }

    /// Each image's token ids (the first column), sorted after the class token.
    fn ids(x: &Tensor) -> Vec<Vec<i64>> {
        let (b, _, _) = x.size3().unwrap();
        (0..b)
            .map(|i| {
                let col = x.get(i).select(1, 0).to_kind(Kind::Int64);
                let mut v = Vec::<i64>::try_from(&col).unwrap();
                v[1..].sort_unstable();
                v
            })
            .collect()
    }

    #[test]
    fn keeps_the_class_token_and_a_subset_of_whole_patch_rows() {
        for (n, p, keep) in [(16, 0.5, 8), (196, 0.75, 49), (49, 0.5, 24), (4, 0.9, 1)] {
            assert_eq!(kept_patches(n, p), keep, "n {n}, p {p}");
            let x = tokens(3, n, 5);
            let y = drop_patches(&x, p, DRAW, true);
            assert_eq!(y.size(), [3, 1 + keep, 5]);
            for (i, row) in ids(&y).iter().enumerate() {
                let base = 1000 * i as i64;
                assert_eq!(row[0], base, "class token first");
                let patches = &row[1..];
                assert!(patches.windows(2).all(|w| w[0] < w[1]), "no patch twice");
                assert!(patches.iter().all(|&t| t > base && t <= base + n));
            }
            // Every width column moved with its token: rows are copied whole.
            assert!(y.eq_tensor(&y.narrow(2, 0, 1)).all().int64_value(&[]) == 1);
        }
    }

    #[test]
    fn zero_is_the_identity() {
        let x = tokens(2, 16, 3);
        assert!(drop_patches(&x, 0.0, DRAW, true).equal(&x));
    }

    #[test]
    fn the_draw_is_a_function_of_its_key_and_the_sample() {
        let x = tokens(4, 64, 2);
        let a = ids(&drop_patches(&x, 0.5, DRAW, true));
        assert_eq!(
            a,
            ids(&drop_patches(&x, 0.5, DRAW, true)),
            "same key, same subset"
        );
        // Different images of one batch get different subsets.
        let rel = |row: &Vec<i64>, i: i64| row[1..].iter().map(|t| t - 1000 * i).collect();
        let subsets: Vec<Vec<i64>> = (0..4).map(|i| rel(&a[i as usize], i)).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(subsets[i], subsets[j], "images {i} and {j}");
            }
        }
        // Another step or seed draws again.
        for other in [PatchDraw { step: 4, ..DRAW }, PatchDraw { seed: 8, ..DRAW }] {
            assert_ne!(ids(&drop_patches(&x, 0.5, other, true)), a, "{other:?}");
        }
        // Image 2 of the batch draws as the first image of a micro-batch starting at sample 2.
        let tail = drop_patches(
            &x.narrow(0, 2, 2),
            0.5,
            PatchDraw {
                first_sample: 2,
                ..DRAW
            },
            true,
        );
        let tail_full = drop_patches(&x, 0.5, DRAW, true).narrow(0, 2, 2);
        assert!(tail.equal(&tail_full));
    }

    #[test]
    fn without_a_class_token_the_same_patches_are_kept() {
        let (n, p) = (16, 0.5);
        let x = tokens(3, n, 4);
        let with = drop_patches(&x, p, DRAW, true);
        let without = drop_patches(&x.narrow(1, 1, n), p, DRAW, false);
        assert_eq!(without.size(), [3, kept_patches(n, p), 4]);
        assert!(without.equal(&with.narrow(1, 1, kept_patches(n, p))));
    }
}

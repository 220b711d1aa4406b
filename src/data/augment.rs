//! Training-image augmentation after the random resized crop (`[data.augment]`): horizontal
//! flip, colour jitter, random grayscale and random erasing, on the 8-bit RGB crop (HWC).
//!
//! Every draw is a hash of `run.seed`, the sample's position in the stream and the draw's
//! purpose — never a shared RNG — so a resumed run, or any worker thread, augments sample k as
//! an uninterrupted run does. The colour operations follow torchvision's functional ops on
//! uint8 tensors (`adjust_brightness`, `adjust_contrast`, `adjust_saturation`, `adjust_hue`,
//! `rgb_to_grayscale`): the same float32 formulas and the same truncation back to 8 bits, so
//! `tests/suite/augment.rs` finds them within 2/255 of torchvision on the same parameters.
use super::stream::mix;
use serde::{Deserialize, Serialize};

/// `[data.augment]`. Everything is off by default (probabilities 0), and the crop's aspect-ratio
/// range is torchvision's; the crop's area range is `data.crop_scale` and its resampling filter
/// `data.image_interpolation`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip. Note that a flip changes the meaning of captions that
    /// say "left" or "right".
    pub hflip: f64,
    /// Aspect-ratio range (width / height) of the random resized crop.
    pub ratio: [f64; 2],
    /// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn from
    /// `[max(0, 1 - b), 1 + b]` (likewise contrast and saturation) and a hue shift from
    /// `[-h, h]`, applied in a random order; a 0 leaves that one out.
    pub color_jitter: [f64; 4],
    /// Probability that the colour jitter is applied to a sample (OpenCLIP's
    /// `color_jitter_prob`).
    pub color_jitter_prob: f64,
    /// Probability of converting a sample to grayscale (three equal channels).
    pub grayscale_prob: f64,
    /// Probability of erasing one random rectangle (torchvision's `RandomErasing`), filled with
    /// `data.image_mean`: zero once normalised, as torchvision's `value = 0` after `Normalize`.
    pub erasing_prob: f64,
    /// The erased rectangle's area range, as fractions of the image.
    pub erasing_scale: [f64; 2],
    /// The erased rectangle's aspect-ratio range.
    pub erasing_ratio: [f64; 2],
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            hflip: 0.0,
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            color_jitter: [0.4, 0.4, 0.4, 0.1],
            color_jitter_prob: 0.0,
            grayscale_prob: 0.0,
            erasing_prob: 0.0,
            erasing_scale: [0.02, 0.33],
            erasing_ratio: [0.3, 3.3],
        }
    }
}

/// What the augmentation of one sample drew.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentDraw {
    pub flip: bool,
    /// The colour ops in the order they apply.
    pub jitter: Vec<ColorOp>,
    pub grayscale: bool,
    /// `(top, left, height, width)` of the erased rectangle.
    pub erase: Option<(usize, usize, usize, usize)>,
}

/// One of ColorJitter's four operations with its drawn factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorOp {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
}

/// A uniform draw in [0, 1) for `purpose` and `k`, from the run's seed and the sample's index.
fn uniform(seed: u64, index: u64, purpose: u64, k: u64) -> f64 {
    (mix(seed, purpose ^ (k << 8), index) >> 11) as f64 / (1u64 << 53) as f64
}

// Distinct purposes keep the draws of different operations independent.
const FLIP: u64 = 0xF11F_0000;
const JITTER: u64 = 0x0C01_0000;
const GRAY: u64 = 0x06A4_0000;
const ERASE: u64 = 0x0E4A_0000;

impl AugmentConfig {
    /// Whether any operation can happen.
    pub fn is_active(&self) -> bool {
        self.hflip > 0.0
            || self.color_jitter_prob > 0.0
            || self.grayscale_prob > 0.0
            || self.erasing_prob > 0.0
    }

    /// The draws for sample `index` of a `size × size` crop.
    pub fn draw(&self, seed: u64, index: u64, size: usize) -> AugmentDraw {
        let u = |purpose, k| uniform(seed, index, purpose, k);
        let mut jitter = Vec::new();
        if u(JITTER, 0) < self.color_jitter_prob {
            // A random order of the four, as torchvision's randperm(4).
            let mut order = [0usize, 1, 2, 3];
            for i in (1..4).rev() {
                let j = ((u(JITTER, 1 + i as u64) * (i + 1) as f64) as usize).min(i);
                order.swap(i, j);
            }
            let [b, c, s, h] = self.color_jitter;
            let factor = |spread: f64, k| {
                let lo = (1.0 - spread).max(0.0);
                (lo + (1.0 + spread - lo) * u(JITTER, k)) as f32
            };
            for op in order {
                match op {
                    0 if b > 0.0 => jitter.push(ColorOp::Brightness(factor(b, 10))),
                    1 if c > 0.0 => jitter.push(ColorOp::Contrast(factor(c, 11))),
                    2 if s > 0.0 => jitter.push(ColorOp::Saturation(factor(s, 12))),
                    3 if h > 0.0 => {
                        jitter.push(ColorOp::Hue((h * (2.0 * u(JITTER, 13) - 1.0)) as f32))
                    }
                    _ => {}
                }
            }
        }
        AugmentDraw {
            flip: u(FLIP, 0) < self.hflip,
            jitter,
            grayscale: u(GRAY, 0) < self.grayscale_prob,
            erase: (u(ERASE, 0) < self.erasing_prob)
                .then(|| self.erase_box(size, |k| u(ERASE, k)))
                .flatten(),
        }
    }

    /// torchvision's `RandomErasing.get_params`: ten tries at an area and a log-uniform aspect
    /// ratio that fit; none fitting erases nothing.
    fn erase_box(
        &self,
        size: usize,
        u: impl Fn(u64) -> f64,
    ) -> Option<(usize, usize, usize, usize)> {
        let area = (size * size) as f64;
        let (lo, hi) = (self.erasing_ratio[0].ln(), self.erasing_ratio[1].ln());
        let [s0, s1] = self.erasing_scale;
        for attempt in 0..10u64 {
            let target = area * (s0 + (s1 - s0) * u(1 + 4 * attempt));
            let ratio = (lo + (hi - lo) * u(2 + 4 * attempt)).exp();
            let h = (target * ratio).sqrt().round() as usize;
            let w = (target / ratio).sqrt().round() as usize;
            if h == 0 || w == 0 || h >= size || w >= size {
                continue;
            }
            let top = ((u(3 + 4 * attempt) * (size - h + 1) as f64) as usize).min(size - h);
            let left = ((u(4 + 4 * attempt) * (size - w + 1) as f64) as usize).min(size - w);
            return Some((top, left, h, w));
        }
        None
    }
}

impl AugmentDraw {
    /// Applies the draw to `rgb`, a `size × size` HWC crop; `fill` is the erased rectangle's
    /// colour.
    pub fn apply(&self, rgb: &mut [u8], size: usize, fill: [u8; 3]) {
        if self.flip {
            hflip(rgb, size);
        }
        for op in &self.jitter {
            match *op {
                ColorOp::Brightness(f) => adjust_brightness(rgb, f),
                ColorOp::Contrast(f) => adjust_contrast(rgb, f),
                ColorOp::Saturation(f) => adjust_saturation(rgb, f),
                ColorOp::Hue(h) => adjust_hue(rgb, h),
            }
        }
        if self.grayscale {
            grayscale(rgb);
        }
        if let Some((top, left, h, w)) = self.erase {
            for y in top..top + h {
                for x in left..left + w {
                    let at = (y * size + x) * 3;
                    rgb[at..at + 3].copy_from_slice(&fill);
                }
            }
        }
    }
}

/// Mirrors every row of a `width`-wide HWC RGB image.
pub fn hflip(rgb: &mut [u8], width: usize) {
    for row in rgb.chunks_exact_mut(width * 3) {
        let n = width;
        for x in 0..n / 2 {
            let (a, b) = (x * 3, (n - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// torchvision's uint8 conversion of a float result: clamped to [0, 255], then truncated.
fn to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// `ratio·a + (1 − ratio)·b` in float32, as torchvision's `_blend`.
fn blend(a: u8, b: f32, ratio: f32) -> u8 {
    to_u8(ratio * f32::from(a) + (1.0 - ratio) * b)
}

/// torchvision's `rgb_to_grayscale` of one pixel: ITU-R 601 luma, truncated to 8 bits.
fn luma(p: &[u8]) -> u8 {
    let [r, g, b] = [p[0], p[1], p[2]].map(f32::from);
    (0.2989 * r + 0.587 * g + 0.114 * b) as u8
}

/// `F.adjust_brightness`: a blend with black.
pub fn adjust_brightness(rgb: &mut [u8], factor: f32) {
    for v in rgb.iter_mut() {
        *v = blend(*v, 0.0, factor);
    }
}

/// `F.adjust_contrast`: a blend with the image's mean gray level.
pub fn adjust_contrast(rgb: &mut [u8], factor: f32) {
    let n = (rgb.len() / 3).max(1);
    let sum: f64 = rgb.chunks_exact(3).map(|p| f64::from(luma(p))).sum();
    let mean = (sum / n as f64) as f32;
    for v in rgb.iter_mut() {
        *v = blend(*v, mean, factor);
    }
}

/// `F.adjust_saturation`: a blend of each pixel with its own gray level.
pub fn adjust_saturation(rgb: &mut [u8], factor: f32) {
    for p in rgb.chunks_exact_mut(3) {
        let g = f32::from(luma(p));
        for v in p.iter_mut() {
            *v = blend(*v, g, factor);
        }
    }
}

/// `F.rgb_to_grayscale(img, num_output_channels=3)`.
pub fn grayscale(rgb: &mut [u8]) {
    for p in rgb.chunks_exact_mut(3) {
        let g = luma(p);
        p.fill(g);
    }
}

/// `F.adjust_hue`: the hue rotated by `shift` (in turns, within [-0.5, 0.5]) through
/// torchvision's own RGB↔HSV formulas in float32.
pub fn adjust_hue(rgb: &mut [u8], shift: f32) {
    for p in rgb.chunks_exact_mut(3) {
        let [r, g, b] = [p[0], p[1], p[2]].map(|v| f32::from(v) / 255.0);
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let h = (h + shift).rem_euclid(1.0);
        let out = hsv_to_rgb(h, s, v);
        // convert_image_dtype's float-to-uint8 scale: 256 - 1e-3, then truncation.
        for (dst, c) in p.iter_mut().zip(out) {
            *dst = to_u8(c * 255.999);
        }
    }
}

/// torchvision's `_rgb2hsv`.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let d = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / d, (maxc - g) / d, (maxc - b) / d);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
}

/// torchvision's `_hsv2rgb`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_the_sample_alone_and_follow_the_probabilities() {
        let cfg = AugmentConfig {
            hflip: 0.5,
            color_jitter_prob: 0.8,
            grayscale_prob: 0.2,
            erasing_prob: 0.25,
            ..AugmentConfig::default()
        };
        let n = 4000;
        let draws: Vec<AugmentDraw> = (0..n).map(|i| cfg.draw(7, i, 32)).collect();
        assert_eq!(
            draws[5],
            cfg.draw(7, 5, 32),
            "a draw is a function of (seed, index)"
        );
        assert_ne!(
            draws[5..20],
            (5..20).map(|i| cfg.draw(8, i, 32)).collect::<Vec<_>>()
        );
        let frac = |f: &dyn Fn(&AugmentDraw) -> bool| {
            draws.iter().filter(|d| f(d)).count() as f64 / n as f64
        };
        for (got, want) in [
            (frac(&|d| d.flip), 0.5),
            (frac(&|d| !d.jitter.is_empty()), 0.8),
            (frac(&|d| d.grayscale), 0.2),
            (frac(&|d| d.erase.is_some()), 0.25),
        ] {
            assert!((got - want).abs() < 0.03, "{got} vs {want}");
        }
        // Every order of the four colour ops occurs, each factor in its range.
        let orders: std::collections::HashSet<Vec<u8>> = draws
            .iter()
            .filter(|d| d.jitter.len() == 4)
            .map(|d| {
                d.jitter
                    .iter()
                    .map(|op| match op {
                        ColorOp::Brightness(f) | ColorOp::Contrast(f) | ColorOp::Saturation(f) => {
                            assert!((0.6..=1.4).contains(f), "{op:?}");
                            0
                        }
                        ColorOp::Hue(h) => {
                            assert!((-0.1..=0.1).contains(h), "{op:?}");
                            1
                        }
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            orders.len(),
            4,
            "the hue op takes each of 4 places: {orders:?}"
        );
        for d in &draws {
            if let Some((top, left, h, w)) = d.erase {
                assert!(top + h <= 32 && left + w <= 32 && h > 0 && w > 0);
            }
        }
        assert!(!AugmentConfig::default().is_active());
        let off = AugmentConfig::default().draw(7, 3, 32);
        assert!(!off.flip && off.jitter.is_empty() && !off.grayscale && off.erase.is_none());
    }

    #[test]
    fn a_flip_mirrors_and_erasing_fills_the_rectangle() {
        let mut img: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        let orig = img.clone();
        hflip(&mut img, 4);
        assert_eq!(&img[0..3], &orig[9..12]);
        hflip(&mut img, 4);
        assert_eq!(img, orig);
        let draw = AugmentDraw {
            flip: false,
            jitter: vec![],
            grayscale: false,
            erase: Some((1, 2, 2, 1)),
        };
        let mut img = vec![0u8; 4 * 4 * 3];
        draw.apply(&mut img, 4, [9, 8, 7]);
        let filled: Vec<usize> = img
            .chunks_exact(3)
            .enumerate()
            .filter(|(_, p)| *p == [9, 8, 7])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(filled, vec![4 + 2, 2 * 4 + 2]);
    }
}

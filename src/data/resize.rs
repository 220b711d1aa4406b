//! How an evaluation image becomes the model's square input: each published model states its
//! own rule (Hugging Face `preprocessor_config.json`, OpenCLIP's `preprocess_cfg`), and zero-shot
//! numbers on non-square images depend on it. A rule is a resize (the shorter side, the longer
//! side, or the whole image to a square) with a filter, then a centre crop, or a pad where the
//! resized image is smaller than the input (OpenCLIP's `longest`).
use serde::{Deserialize, Serialize};

/// Which side the resize fits (`data.image_resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageResize {
    /// The shorter side to the size, the other side in proportion (CLIP, OpenCLIP `shortest`).
    #[default]
    Shortest,
    /// The longer side to the size, in proportion, then padded (OpenCLIP `longest`).
    Longest,
    /// The whole image to size × size, the aspect ratio not kept (SigLIP, OpenCLIP `squash`).
    Squash,
}

/// The resampling filter (`data.image_interpolation`); PIL's kernels, which both transformers'
/// and OpenCLIP's processors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Catmull-Rom (a = -0.5), PIL's `BICUBIC`.
    #[default]
    Bicubic,
    /// The triangle filter, PIL's `BILINEAR`.
    Bilinear,
    /// Lanczos with a = 3, PIL's `LANCZOS`.
    Lanczos,
}

impl Interpolation {
    pub(crate) fn filter(self) -> fast_image_resize::FilterType {
        use fast_image_resize::FilterType;
        match self {
            Self::Bicubic => FilterType::CatmullRom,
            Self::Bilinear => FilterType::Bilinear,
            Self::Lanczos => FilterType::Lanczos3,
        }
    }
}

/// One model's evaluation resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResizeRule {
    pub mode: ImageResize,
    /// The resize's target before the crop (`data.image_resize_size`); 0 = the model's input
    /// size. CLIP processors that resize to 256 and crop 224 state 256.
    pub size: u32,
    pub filter: Interpolation,
    /// Gray level of the padding (`data.image_fill`, OpenCLIP's `fill_color`).
    pub fill: u8,
}

/// Where the resized image lands in the `input × input` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The size the whole image is resized to.
    pub resized: (u32, u32),
    /// The output's window into the resized image: `(left, top)` of the crop, or where the
    /// resized image starts when it is padded (negative).
    pub offset: (i64, i64),
}

impl ResizeRule {
    /// The resize and crop/pad of a `w × h` image for a model of input size `input`. Sizes
    /// follow the processors: the proportional side truncated (`int(size * long / short)`, as
    /// transformers and torchvision compute it) for `shortest`, rounded half to even
    /// (Python's `round`) for `longest`; at least one pixel.
    pub fn place(&self, w: u32, h: u32, input: u32) -> Placement {
        let target = if self.size == 0 { input } else { self.size };
        let (t, wf, hf) = (u64::from(target), u64::from(w), u64::from(h));
        let resized = match self.mode {
            ImageResize::Shortest if w <= h => (target, (t * hf / wf).max(1) as u32),
            ImageResize::Shortest => ((t * wf / hf).max(1) as u32, target),
            ImageResize::Longest => {
                let ratio =
                    (f64::from(w) / f64::from(target)).max(f64::from(h) / f64::from(target));
                let side = |x: u32| ((f64::from(x) / ratio).round_ties_even() as u32).max(1);
                (side(w), side(h))
            }
            ImageResize::Squash => (target, target),
        };
        let offset = |resized: u32| {
            let (r, i) = (i64::from(resized), i64::from(input));
            // transformers' centre crop: (r - i) // 2; a pad puts (i - r) // 2 before.
            if r >= i { (r - i) / 2 } else { -((i - r) / 2) }
        };
        Placement {
            resized,
            offset: (offset(resized.0), offset(resized.1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mode: ImageResize, size: u32) -> ResizeRule {
        ResizeRule {
            mode,
            size,
            ..ResizeRule::default()
        }
    }

    #[test]
    fn placements_follow_the_processors_arithmetic() {
        let p = |r: ResizeRule, w, h| {
            let p = r.place(w, h, 224);
            (p.resized, p.offset)
        };
        // 300×200: short side 224, long int(224 * 300 / 200) = 336, crop from (56, 0).
        assert_eq!(
            p(rule(ImageResize::Shortest, 0), 300, 200),
            ((336, 224), (56, 0))
        );
        assert_eq!(
            p(rule(ImageResize::Shortest, 0), 200, 300),
            ((224, 336), (0, 56))
        );
        // Resize to 256, crop 224: (256 - 224) / 2 = 16 on the short side.
        assert_eq!(
            p(rule(ImageResize::Shortest, 256), 640, 480),
            ((341, 256), (58, 16))
        );
        assert_eq!(
            p(rule(ImageResize::Squash, 0), 300, 200),
            ((224, 224), (0, 0))
        );
        // Longest: 300×200 → 224 × round(149.33) = 149, padded by (224 - 149) / 2 = 37 above.
        assert_eq!(
            p(rule(ImageResize::Longest, 0), 300, 200),
            ((224, 149), (0, -37))
        );
        // A 1-pixel-wide image still has a pixel.
        assert_eq!(p(rule(ImageResize::Longest, 0), 1, 5000).0, (1, 224));
        assert_eq!(
            p(rule(ImageResize::Shortest, 0), 5000, 1).0,
            (1_120_000, 224)
        );
    }
}

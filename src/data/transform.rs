//! Image decoding and augmentation, to 8-bit RGB at the model's input size.
//!
//! Decoding goes to 8-bit RGB whatever the source (grayscale, alpha, CMYK, 16-bit) and stays in
//! u8: normalisation to floats happens once per batch as a tensor op, which is far cheaper than
//! per-pixel float conversion here. Resizing uses fast_image_resize's SIMD convolution with
//! PIL's kernels (Catmull-Rom a = -0.5 for BICUBIC, as CLIP's preprocessing uses; see
//! [`Interpolation`]).
use super::SkipReason;
use super::augment::AugmentConfig;
use super::resize::{Interpolation, ResizeRule};
use super::stream::mix;
use fast_image_resize::{
    PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::{ImageDecoder, ImageReader, Limits};
use std::io::Cursor;

/// What happens to a decoded image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    /// Random resized crop (area fraction in `scale`, aspect ratio in `augment.ratio`) to size,
    /// then `augment`'s flip, colour jitter, grayscale and erasing (erased pixels get `fill`).
    Train {
        scale: [f64; 2],
        filter: Interpolation,
        augment: AugmentConfig,
        fill: [u8; 3],
    },
    /// The model's own evaluation resize (CLIP's: the shorter side, then a centre crop).
    Eval(ResizeRule),
}

#[derive(Debug, Clone)]
pub struct ImageTransform {
    pub size: u32,
    pub augment: Augment,
    pub max_pixels: u64,
    pub seed: u64,
}

impl ImageTransform {
    /// Decodes `bytes` and returns `size × size × 3` RGB bytes (HWC). `index` (the sample's
    /// position in the stream) seeds the crop, so augmentation is reproducible and resumable.
    pub fn apply(
        &self,
        bytes: &[u8],
        index: u64,
        resizer: &mut Resizer,
    ) -> Result<Vec<u8>, SkipReason> {
        let (w, h, rgb) = decode_rgb8(bytes, self.max_pixels)?;
        let src =
            ImageRef::new(w, h, &rgb, PixelType::U8x3).map_err(|_| SkipReason::UndecodableImage)?;
        match self.augment {
            Augment::Train {
                scale,
                filter,
                augment,
                fill,
            } => {
                let crop = (scale, augment.ratio);
                let (left, top, cw, ch) = random_resized_crop(w, h, crop, self.seed, index);
                let mut dst = Image::new(self.size, self.size, PixelType::U8x3);
                let opts = ResizeOptions::new()
                    .crop(left, top, cw, ch)
                    .resize_alg(ResizeAlg::Convolution(filter.filter()));
                resizer
                    .resize(&src, &mut dst, &opts)
                    .map_err(|_| SkipReason::UndecodableImage)?;
                let mut out = dst.into_vec();
                if augment.is_active() {
                    let size = self.size as usize;
                    augment
                        .draw(self.seed, index, size)
                        .apply(&mut out, size, fill);
                }
                Ok(out)
            }
            Augment::Eval(rule) => eval_resize(&src, rule, self.size, resizer),
        }
    }
}

/// `rule`'s resize and centre crop or pad, in one resampling pass: only the part of the resized
/// image that lands in the output is computed (a source window mapped exactly as the whole
/// resize would map it), so a very elongated image costs no more than a square one.
fn eval_resize(
    src: &ImageRef<'_>,
    rule: ResizeRule,
    input: u32,
    resizer: &mut Resizer,
) -> Result<Vec<u8>, SkipReason> {
    let (w, h) = (src.width(), src.height());
    let place = rule.place(w, h, input);
    // Per axis: the kept span of the resized image, and where it starts in the output.
    let span = |resized: u32, offset: i64| {
        let start = offset.max(0) as u32;
        let end = (offset + i64::from(input)).min(i64::from(resized)) as u32;
        (start, end - start, (-offset).max(0) as u32)
    };
    let (x0, cw, dx) = span(place.resized.0, place.offset.0);
    let (y0, ch, dy) = span(place.resized.1, place.offset.1);
    let (sx, sy) = (
        f64::from(w) / f64::from(place.resized.0),
        f64::from(h) / f64::from(place.resized.1),
    );
    // Two passes, each into 8-bit pixels (rounded and clipped), in Pillow's order: vertical
    // first only when the height shrinks by more than twice as many pixels as the width
    // (Pillow 13's Resample.c). One combined pass, or the other order, differs at hard edges
    // by up to 18/255 with the bicubic kernel's overshoot.
    let alg = ResizeAlg::Convolution(rule.filter.filter());
    let mut pass = |from: &ImageRef<'_>, crop: (f64, f64, f64, f64), to: (u32, u32)| {
        let mut out = Image::new(to.0, to.1, PixelType::U8x3);
        let opts = ResizeOptions::new()
            .crop(crop.0, crop.1, crop.2, crop.3)
            .resize_alg(alg);
        resizer
            .resize(from, &mut out, &opts)
            .map(|()| out)
            .map_err(|_| SkipReason::UndecodableImage)
    };
    let (shrink_w, shrink_h) = (
        i64::from(w) - i64::from(place.resized.0),
        i64::from(h) - i64::from(place.resized.1),
    );
    let (fx, fw) = (f64::from(x0) * sx, f64::from(cw) * sx);
    let (fy, fh) = (f64::from(y0) * sy, f64::from(ch) * sy);
    let kept = if shrink_h > 0 && shrink_h > 2 * shrink_w {
        let cols = pass(src, (0.0, fy, f64::from(w), fh), (w, ch))?;
        pass(&view(&cols)?, (fx, 0.0, fw, f64::from(ch)), (cw, ch))?
    } else {
        let rows = pass(src, (fx, 0.0, fw, f64::from(h)), (cw, h))?;
        pass(&view(&rows)?, (0.0, fy, f64::from(cw), fh), (cw, ch))?
    };

    if (cw, ch) == (input, input) {
        return Ok(kept.into_vec());
    }
    let n = input as usize;
    let mut out = vec![rule.fill; n * n * 3];
    let kept = kept.into_vec();
    let row = cw as usize * 3;
    for (y, line) in kept.chunks_exact(row).enumerate() {
        let at = ((dy as usize + y) * n + dx as usize) * 3;
        out[at..at + row].copy_from_slice(line);
    }
    Ok(out)
}

/// Any format `image` reads, to (width, height, RGB8 bytes). The header is read first so that
/// a decompression bomb is refused before anything is allocated for it.
pub fn decode_rgb8(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32, Vec<u8>), SkipReason> {
    if bytes.is_empty() {
        return Err(SkipReason::EmptyImage);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| SkipReason::UndecodableImage)?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|_| SkipReason::UndecodableImage)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(SkipReason::UndecodableImage);
    }
    if w as u64 * h as u64 > max_pixels {
        return Err(SkipReason::ImageTooLarge);
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    decoder
        .set_limits(limits)
        .map_err(|_| SkipReason::ImageTooLarge)?;
    let img =
        image::DynamicImage::from_decoder(decoder).map_err(|_| SkipReason::UndecodableImage)?;
    let rgb = match img {
        image::DynamicImage::ImageRgb8(i) => i,
        other => other.to_rgb8(),
    };
    Ok((w, h, rgb.into_raw()))
}

/// An 8-bit RGB image as a resize source.
fn view<'a>(img: &'a Image<'_>) -> Result<ImageRef<'a>, SkipReason> {
    ImageRef::new(img.width(), img.height(), img.buffer(), PixelType::U8x3)
        .map_err(|_| SkipReason::UndecodableImage)
}

/// torchvision's RandomResizedCrop parameters for `(scale, ratio)`: ten tries at a random area
/// and a log-uniform aspect ratio, then a center crop clamped to the ratio range.
fn random_resized_crop(
    w: u32,
    h: u32,
    (scale, ratio): ([f64; 2], [f64; 2]),
    seed: u64,
    index: u64,
) -> (f64, f64, f64, f64) {
    let (wf, hf) = (w as f64, h as f64);
    let area = wf * hf;
    let (lo, hi) = (ratio[0].ln(), ratio[1].ln());
    let uniform = |k: u64| (mix(seed, 0xC0_FFEE ^ k, index) >> 11) as f64 / (1u64 << 53) as f64;
    for attempt in 0..10u64 {
        let target = area * (scale[0] + (scale[1] - scale[0]) * uniform(4 * attempt));
        let ratio = (lo + (hi - lo) * uniform(4 * attempt + 1)).exp();
        let cw = (target * ratio).sqrt().round();
        let ch = (target / ratio).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= wf && ch <= hf {
            let top = ((hf - ch + 1.0) * uniform(4 * attempt + 2))
                .floor()
                .min(hf - ch);
            let left = ((wf - cw + 1.0) * uniform(4 * attempt + 3))
                .floor()
                .min(wf - cw);
            return (left, top, cw, ch);
        }
    }
    let in_ratio = wf / hf;
    let (cw, ch) = if in_ratio < ratio[0] {
        (wf, (wf / ratio[0]).round())
    } else if in_ratio > ratio[1] {
        ((hf * ratio[1]).round(), hf)
    } else {
        (wf, hf)
    };
    (((wf - cw) / 2.0).round(), ((hf - ch) / 2.0).round(), cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

    const TV_RATIO: [f64; 2] = [3.0 / 4.0, 4.0 / 3.0];

    fn jpeg(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn eval_keeps_the_center_and_train_crops_stay_inside() {
        // Left third red, middle green, right third blue: the center crop of a 3:1 image is green.
        let bytes = jpeg(300, 100, |x, _| {
            if x < 100 {
                [255, 0, 0]
            } else if x < 200 {
                [0, 255, 0]
            } else {
                [0, 0, 255]
            }
        });
        let t = ImageTransform {
            size: 32,
            augment: Augment::Eval(ResizeRule::default()),
            max_pixels: 1 << 30,
            seed: 0,
        };
        let out = t.apply(&bytes, 0, &mut Resizer::new()).unwrap();
        assert_eq!(out.len(), 32 * 32 * 3);
        let mid = &out[(16 * 32 + 16) * 3..(16 * 32 + 16) * 3 + 3];
        assert!(mid[1] > 200 && mid[0] < 40 && mid[2] < 40, "{mid:?}");

        for index in 0..50 {
            let (l, t, w, h) = random_resized_crop(300, 100, ([0.08, 1.0], TV_RATIO), 7, index);
            assert!(
                l >= 0.0 && t >= 0.0 && l + w <= 300.0 && t + h <= 100.0,
                "{l} {t} {w} {h}"
            );
            let ratio = w / h;
            assert!(
                (0.7..=1.4).contains(&ratio) || (w, h) == (133.0, 100.0),
                "{ratio}"
            );
        }
        assert_eq!(
            random_resized_crop(200, 200, ([0.5, 1.0], TV_RATIO), 7, 3),
            random_resized_crop(200, 200, ([0.5, 1.0], TV_RATIO), 7, 3)
        );
        assert_ne!(
            random_resized_crop(200, 200, ([0.5, 1.0], TV_RATIO), 7, 3),
            random_resized_crop(200, 200, ([0.5, 1.0], TV_RATIO), 7, 4)
        );
    }

    #[test]
    fn odd_pixel_formats_become_rgb8() {
        let gray = image::GrayImage::from_pixel(8, 6, image::Luma([77]));
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(gray.as_raw(), 8, 6, image::ExtendedColorType::L8)
            .unwrap();
        let (w, h, rgb) = decode_rgb8(&png, 1 << 20).unwrap();
        assert_eq!((w, h, &rgb[..3]), (8, 6, &[77u8, 77, 77][..]));

        let rgba16: image::ImageBuffer<image::Rgba<u16>, Vec<u16>> =
            image::ImageBuffer::from_pixel(4, 4, image::Rgba([65535, 0, 32896, 0]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba16(rgba16)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let (_, _, rgb) = decode_rgb8(&png, 1 << 20).unwrap();
        assert_eq!(
            &rgb[..3],
            &[255, 0, 128],
            "16-bit scaled to 8-bit, alpha dropped"
        );
    }

    #[test]
    fn bad_images_are_classified() {
        assert_eq!(decode_rgb8(&[], 1 << 20), Err(SkipReason::EmptyImage));
        assert_eq!(
            decode_rgb8(b"definitely not an image", 1 << 20),
            Err(SkipReason::UndecodableImage)
        );
        let good = jpeg(64, 64, |_, _| [1, 2, 3]);
        assert_eq!(
            decode_rgb8(&good[..good.len() / 3], 1 << 20).err(),
            Some(SkipReason::UndecodableImage)
        );
        assert_eq!(
            decode_rgb8(&good, 64 * 63).err(),
            Some(SkipReason::ImageTooLarge)
        );
    }
}

//! Image decoding and augmentation, to 8-bit RGB at the model's input size.
//!
//! Decoding goes to 8-bit RGB whatever the source (grayscale, alpha, CMYK, 16-bit) and stays in
//! u8: normalisation to floats happens once per batch as a tensor op, which is far cheaper than
//! per-pixel float conversion here. Resizing uses fast_image_resize's SIMD Catmull-Rom filter —
//! the same bicubic kernel (a = -0.5) as PIL's BICUBIC that CLIP's preprocessing uses.
use super::SkipReason;
use super::stream::mix;
use fast_image_resize::{
    self as fr, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::{ImageDecoder, ImageReader, Limits};
use std::io::Cursor;

/// What happens to a decoded image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    /// Random resized crop (area fraction in `scale`, aspect ratio in [3/4, 4/3]) to size.
    Train { scale: [f64; 2] },
    /// Resize the shorter side to size, then center crop (CLIP's eval transform).
    Eval,
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
        let (left, top, cw, ch) = match self.augment {
            Augment::Train { scale } => random_resized_crop(w, h, scale, self.seed, index),
            Augment::Eval => center_square(w, h),
        };
        let src =
            ImageRef::new(w, h, &rgb, PixelType::U8x3).map_err(|_| SkipReason::UndecodableImage)?;
        let mut dst = Image::new(self.size, self.size, PixelType::U8x3);
        let opts = ResizeOptions::new()
            .crop(left, top, cw, ch)
            .resize_alg(ResizeAlg::Convolution(fr::FilterType::CatmullRom));
        resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|_| SkipReason::UndecodableImage)?;
        Ok(dst.into_vec())
    }
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

/// torchvision's RandomResizedCrop parameters: ten tries at a random area and aspect ratio,
/// then a center crop clamped to the ratio range.
fn random_resized_crop(
    w: u32,
    h: u32,
    scale: [f64; 2],
    seed: u64,
    index: u64,
) -> (f64, f64, f64, f64) {
    let (wf, hf) = (w as f64, h as f64);
    let area = wf * hf;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
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
    let (cw, ch) = if in_ratio < 3.0 / 4.0 {
        (wf, (wf / (3.0 / 4.0)).round())
    } else if in_ratio > 4.0 / 3.0 {
        ((hf * 4.0 / 3.0).round(), hf)
    } else {
        (wf, hf)
    };
    (((wf - cw) / 2.0).round(), ((hf - ch) / 2.0).round(), cw, ch)
}

/// The centered square of side min(w, h): resizing it to size×size is "resize the shorter
/// side to size, then center crop", done in one resampling pass.
fn center_square(w: u32, h: u32) -> (f64, f64, f64, f64) {
    let side = w.min(h) as f64;
    ((w as f64 - side) / 2.0, (h as f64 - side) / 2.0, side, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

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
            augment: Augment::Eval,
            max_pixels: 1 << 30,
            seed: 0,
        };
        let out = t.apply(&bytes, 0, &mut Resizer::new()).unwrap();
        assert_eq!(out.len(), 32 * 32 * 3);
        let mid = &out[(16 * 32 + 16) * 3..(16 * 32 + 16) * 3 + 3];
        assert!(mid[1] > 200 && mid[0] < 40 && mid[2] < 40, "{mid:?}");

        for index in 0..50 {
            let (l, t, w, h) = random_resized_crop(300, 100, [0.08, 1.0], 7, index);
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
            random_resized_crop(200, 200, [0.5, 1.0], 7, 3),
            random_resized_crop(200, 200, [0.5, 1.0], 7, 3)
        );
        assert_ne!(
            random_resized_crop(200, 200, [0.5, 1.0], 7, 3),
            random_resized_crop(200, 200, [0.5, 1.0], 7, 4)
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

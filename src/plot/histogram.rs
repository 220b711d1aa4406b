//! A histogram of one value per sample (`data filter`'s CLIP scores), with a threshold marked,
//! so a person can see where a cut falls before trusting it.
use super::PlotError;
use super::canvas::{Canvas, GRID, INK, text_width};
use image::Rgb;
use std::path::Path;

const BINS: usize = 50;

/// Draws `values` in 50 bins over their range into a PNG at `path`, `threshold` as a red line
/// with the share of values at or above it.
pub fn histogram_png(
    values: &[f32],
    threshold: Option<f32>,
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(PlotError::Nothing(
            "no values to draw a histogram of".into(),
        ));
    }
    let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-6);
    let mut counts = [0usize; BINS];
    for v in &finite {
        let b = (((v - lo) / span) * BINS as f32) as usize;
        counts[b.min(BINS - 1)] += 1;
    }
    let most = *counts.iter().max().unwrap_or(&1) as f64;
    let (w, h) = (640u32, 360u32);
    let (left, right, top, bottom) = (56i64, 16i64, 32i64, 48i64);
    let (pw, ph) = (w as i64 - left - right, h as i64 - top - bottom);
    let mut c = Canvas::new(w, h);
    c.text(left as u32, 10, title, false);
    for i in 0..=4 {
        let y = top + ph * i / 4;
        c.line((left, y), (left + pw, y), 1, GRID);
        let label = format!("{:.0}", most * (4 - i) as f64 / 4.0);
        c.text(
            (left - 8 - text_width(&label) as i64).max(0) as u32,
            (y - 4) as u32,
            &label,
            false,
        );
    }
    let bar = pw / BINS as i64;
    for (i, n) in counts.iter().enumerate() {
        let bh = (ph as f64 * *n as f64 / most).round() as i64;
        c.rect(
            left + i as i64 * bar,
            top + ph - bh,
            bar - 1,
            bh,
            Rgb([70, 120, 190]),
        );
    }
    c.line((left, top + ph), (left + pw, top + ph), 1, INK);
    for (v, at) in [(lo, left), (hi, left + pw)] {
        let label = format!("{v:.3}");
        let x = (at - text_width(&label) as i64 / 2).clamp(0, w as i64 - text_width(&label) as i64)
            as u32;
        c.text(x, (top + ph + 8) as u32, &label, false);
    }
    if let Some(t) = threshold.filter(|t| t.is_finite()) {
        let x = left + ((t - lo) / span * pw as f32).round().clamp(0.0, pw as f32) as i64;
        let red = Rgb([200, 30, 30]);
        c.rect(x - 1, top, 2, ph, red);
        let kept = finite.iter().filter(|v| **v >= t).count();
        let label = format!(
            "threshold {t:.3}: {kept} of {} kept ({:.1} %)",
            finite.len(),
            100.0 * kept as f64 / finite.len() as f64
        );
        c.text_in(left as u32, (top + ph + 26) as u32, &label, false, red);
    }
    c.img.save(path).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

//! `--plot OUT.png`: the confusion matrix as a heat map, rows = true class, columns =
//! predicted, each row normalised by its class's sample count. Labels are drawn with an
//! embedded 8×8 bitmap font ([`super::canvas`]), so no system font or plotting backend is needed.
use super::PlotError;
use super::canvas::Canvas;
use image::Rgb;
use std::path::Path;

const LABEL_CHARS: usize = 24;

/// Writes the heat map of `confusion` (`[true][predicted]` counts) to `path`.
pub fn confusion_png(
    confusion: &[Vec<u64>],
    names: &[String],
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    let c = confusion.len().max(1) as u32;
    let cell = (720 / c).clamp(2, 28);
    let labelled = cell >= 8;
    let label_px = if labelled {
        8 * names
            .iter()
            .map(|n| n.chars().count().min(LABEL_CHARS))
            .max()
            .unwrap_or(0) as u32
    } else {
        0
    };
    let (left, top) = (label_px + 12, 36 + label_px + 6);
    let grid = c * cell;
    let (w, h) = (
        (left + grid + 12).max(8 * title.len() as u32 + 16),
        top + grid + 12,
    );
    let mut c = Canvas::new(w, h);
    c.text(8, 6, title, false);
    c.text(
        8,
        20,
        "rows: true class, columns: predicted (share of the row)",
        false,
    );
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &n) in row.iter().enumerate() {
            let colour = shade(n as f64 / total as f64);
            let (x0, y0) = (left + p as u32 * cell, top + t as u32 * cell);
            for y in y0..y0 + cell {
                for x in x0..x0 + cell {
                    // A one-pixel gap keeps neighbouring cells apart when they are large.
                    let edge = cell >= 6 && (x == x0 + cell - 1 || y == y0 + cell - 1);
                    c.img
                        .put_pixel(x, y, if edge { Rgb([235, 235, 235]) } else { colour });
                }
            }
        }
    }
    if labelled {
        for (i, name) in names.iter().enumerate() {
            let name: String = name.chars().take(LABEL_CHARS).collect();
            let along = i as u32 * cell + (cell - 8) / 2;
            let len = 8 * name.chars().count() as u32;
            c.text(left - 6 - len, top + along, &name, false);
            c.text(left + along, top - 6, &name, true);
        }
    }
    c.img.save(path).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// White (0) to dark blue (1).
fn shade(v: f64) -> Rgb<u8> {
    let v = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    Rgb([mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_whose_cells_follow_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let names = vec!["cat".to_string(), "dog".to_string()];
        confusion_png(&[vec![10, 0], vec![5, 5]], &names, "test", &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // 2 classes → 28-px cells; labels are 3 chars (24 px).
        let (left, top, cell) = (24 + 12, 36 + 24 + 6, 28);
        let at = |t: u32, p: u32| *img.get_pixel(left + p * cell + 5, top + t * cell + 5);
        assert_eq!(at(0, 0), shade(1.0));
        assert_eq!(at(0, 1), shade(0.0));
        assert_eq!(at(1, 0), shade(0.5));
        assert_eq!(at(1, 1), shade(0.5));
    }
}

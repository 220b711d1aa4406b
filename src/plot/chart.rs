//! Laying out panels of line charts: a legend of runs on top, then a grid of panels, each with
//! a title, "nice" tick values on both axes, grid lines and one coloured line per run.
use super::canvas::{CHAR_PX, Canvas, GRID, INK, text_width};
use super::curves::Panel;
use image::{Rgb, RgbImage};

const COLUMNS: usize = 3;
const PANEL_W: u32 = 420;
const PANEL_H: u32 = 270;
/// Inside a panel: room for the title above, tick labels left and below.
const LEFT: u32 = 76;
const RIGHT: u32 = 14;
const TOP: u32 = 24;
const BOTTOM: u32 = 36;
const LEGEND_ROW: u32 = 16;
/// The line under the panels that says how many metrics were left out.
const NOTE_ROW: u32 = 16;
const NAME_CHARS: usize = 48;

/// Matplotlib's "tab10" colours, one per run (repeating after ten).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

pub fn colour(run: usize) -> Rgb<u8> {
    Rgb(PALETTE[run % PALETTE.len()])
}

/// The legend, the panels, and `note` (a line under them) when there is one.
pub fn draw(panels: &[Panel], runs: &[&str], note: Option<&str>) -> RgbImage {
    let columns = panels.len().clamp(1, COLUMNS);
    let rows = panels.len().div_ceil(columns);
    let width = columns as u32 * PANEL_W;
    let header = 8 + LEGEND_ROW * runs.len() as u32 + 8;
    let footer = if note.is_some() { NOTE_ROW } else { 0 };
    let body = header + rows as u32 * PANEL_H;
    let mut c = Canvas::new(width, body + footer);
    if let Some(note) = note {
        c.text(8, body + 4, note, false);
    }
    for (i, name) in runs.iter().enumerate() {
        let y = 8 + LEGEND_ROW * i as u32;
        c.rect(8, y as i64, 24, 8, colour(i));
        c.text(40, y, &shorten(name), false);
    }
    for (i, panel) in panels.iter().enumerate() {
        let x = (i % columns) as u32 * PANEL_W;
        let y = header + (i / columns) as u32 * PANEL_H;
        draw_panel(&mut c, x, y, panel);
    }
    c.img
}

/// The end of a long path, which tells runs apart better than its start.
fn shorten(name: &str) -> String {
    let n = name.chars().count();
    if n <= NAME_CHARS {
        return name.to_string();
    }
    let tail: String = name.chars().skip(n - (NAME_CHARS - 3)).collect();
    format!("...{tail}")
}

fn draw_panel(c: &mut Canvas, x0: u32, y0: u32, panel: &Panel) {
    let finite = || {
        panel
            .lines
            .iter()
            .flat_map(|(_, pts)| pts.iter())
            .filter(|(_, v)| v.is_finite())
    };
    let (xs, ys) = (range(finite().map(|p| p.0)), range(finite().map(|p| p.1)));
    let ys = padded(ys);
    let (left, top) = (x0 + LEFT, y0 + TOP);
    let (w, h) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    let px = |s: f64| left as f64 + (s - xs.0) / (xs.1 - xs.0) * w as f64;
    let py = |v: f64| (top + h) as f64 - (v - ys.0) / (ys.1 - ys.0) * h as f64;
    let title_x = left + w.saturating_sub(text_width(&panel.title)) / 2;
    c.text(title_x, y0 + 6, &panel.title, false);
    let yt = ticks(ys.0, ys.1);
    for &v in &yt.values {
        let y = py(v).round() as i64;
        c.line((left as i64, y), ((left + w) as i64, y), 1, GRID);
        let label = yt.label(v);
        let lx = left.saturating_sub(6 + text_width(&label));
        c.text(lx, (y - 4).max(0) as u32, &label, false);
    }
    let xt = ticks(xs.0, xs.1);
    for &s in &xt.values {
        let x = px(s).round() as i64;
        c.line((x, top as i64), (x, (top + h) as i64), 1, GRID);
        let label = xt.label(s);
        let lx = (x - text_width(&label) as i64 / 2).max(0) as u32;
        c.text(lx, top + h + 6, &label, false);
    }
    c.text(
        left + w / 2 - text_width("step") / 2,
        top + h + 20,
        "step",
        false,
    );
    // The frame over the grid, then the curves over both.
    let (l, t, r, b) = (left as i64, top as i64, (left + w) as i64, (top + h) as i64);
    for (a, z) in [
        ((l, t), (r, t)),
        ((l, b), (r, b)),
        ((l, t), (l, b)),
        ((r, t), (r, b)),
    ] {
        c.line(a, z, 1, INK);
    }
    for (run, pts) in &panel.lines {
        let col = colour(*run);
        let mut prev: Option<(i64, i64)> = None;
        for &(s, v) in pts {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let p = (px(s).round() as i64, py(v).round() as i64);
            match prev {
                Some(q) => c.line(q, p, 2, col),
                None => c.rect(p.0 - 1, p.1 - 1, 3, 3, col),
            }
            // Few points (evaluations): mark each, a line alone hides where they are.
            if pts.len() <= 64 {
                c.rect(p.0 - 2, p.1 - 2, 5, 5, col);
            }
            prev = Some(p);
        }
    }
}

/// The smallest and largest value; (0, 1) when there is none.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return (0.0, 1.0);
    }
    if lo == hi {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - d, hi + d);
    }
    (lo, hi)
}

/// 5 % of room above and below, so extreme points do not sit on the frame.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let d = (hi - lo) * 0.05;
    (lo - d, hi + d)
}

/// Tick values at a 1-2-5 step, and how many decimals their labels need.
struct Ticks {
    values: Vec<f64>,
    step: f64,
}

/// No ticks (rather than `NaN` labels or a flood of them) when the span is not a positive
/// finite number, e.g. so small that its step underflows.
fn ticks(lo: f64, hi: f64) -> Ticks {
    let none = Ticks {
        values: Vec::new(),
        step: 1.0,
    };
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    if !(mag.is_normal() && mag > 0.0 && lo.is_finite() && hi.is_finite()) {
        return none;
    }
    let step = match raw / mag {
        f if f <= 1.0 => mag,
        f if f <= 2.0 => 2.0 * mag,
        f if f <= 5.0 => 5.0 * mag,
        _ => 10.0 * mag,
    };
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    if last.saturating_sub(first) > 20 {
        return none;
    }
    let values = (first..=last).map(|i| i as f64 * step).collect();
    Ticks { values, step }
}

impl Ticks {
    /// Plain decimals where they read well, else scientific notation ("2e-4").
    fn label(&self, v: f64) -> String {
        let biggest = self.values.iter().fold(0f64, |m, x| m.max(x.abs()));
        if v == 0.0 {
            return "0".into();
        }
        if biggest >= 1e6 || self.step < 1e-3 {
            let s = format!("{v:.1e}");
            return s.replace(".0e", "e");
        }
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        let s = format!("{v:.decimals$}");
        // A label never needs more room than the font leaves beside the panel.
        if text_width(&s) + 6 > LEFT - CHAR_PX / 2 {
            format!("{v:.1e}")
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_a_1_2_5_step_inside_the_range() {
        let t = ticks(0.0, 10.0);
        assert_eq!(t.values, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.013, 0.061);
        assert_eq!(t.step, 0.01);
        let labels: Vec<String> = t.values.iter().map(|&v| t.label(v)).collect();
        assert_eq!(labels, ["0.02", "0.03", "0.04", "0.05", "0.06"]);
        let t = ticks(0.0, 0.0005);
        assert_eq!(t.label(t.values[1]), "1e-4");
        let t = ticks(0.0, 3.0e6);
        assert_eq!(t.label(t.values[1]), "1e6");
    }

    #[test]
    fn a_flat_or_empty_range_still_has_height() {
        assert_eq!(range([2.0, 2.0].into_iter()), (1.8, 2.2));
        assert_eq!(range([0.0].into_iter()), (-1.0, 1.0));
        assert_eq!(range(std::iter::empty()), (0.0, 1.0));
    }

    #[test]
    fn long_run_names_keep_their_end() {
        let name = format!("/very/long/path/{}/run-a", "x".repeat(60));
        let short = shorten(&name);
        assert_eq!(short.chars().count(), NAME_CHARS);
        assert!(short.starts_with("...") && short.ends_with("/run-a"));
    }

    #[test]
    fn huge_values_keep_finite_axes_and_an_underflowing_span_has_no_ticks() {
        let t = ticks(-1.05e300, 1.05e300);
        assert!(!t.values.is_empty());
        for v in &t.values {
            let label = t.label(*v);
            assert!(v.is_finite() && !label.contains("NaN") && !label.contains("inf"));
        }
        assert!(ticks(0.0, 5e-324).values.is_empty());
        assert!(ticks(0.0, f64::INFINITY).values.is_empty());
        let panel = Panel {
            title: "loss".into(),
            lines: vec![(
                0,
                vec![(1.0, -1e300), (2.0, 1e300), (3.0, f64::NAN), (4.0, 0.0)],
            )],
        };
        let img = draw(&[panel], &["r"], Some("1 more metric(s) not drawn"));
        assert_eq!(
            img.dimensions(),
            (PANEL_W, 8 + LEGEND_ROW + 8 + PANEL_H + NOTE_ROW)
        );
        let blue = img.pixels().filter(|p| p.0 == PALETTE[0]).count();
        assert!(blue > 500, "the curve is drawn: {blue} pixels");
    }
}

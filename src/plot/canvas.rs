//! A white RGB image to draw charts on: text in an embedded 8×8 bitmap font (so no system font
//! or plotting backend is needed on a cluster node), lines and filled rectangles. Everything
//! outside the image is clipped, so callers never check bounds.
use image::{Rgb, RgbImage};

pub const INK: Rgb<u8> = Rgb([20, 20, 20]);
pub const GRID: Rgb<u8> = Rgb([225, 225, 225]);
/// Width and height of one character of the font, in pixels.
pub const CHAR_PX: u32 = 8;

pub struct Canvas {
    pub img: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            img: RgbImage::from_pixel(width, height, Rgb([255, 255, 255])),
        }
    }

    pub fn width(&self) -> u32 {
        self.img.width()
    }

    pub fn height(&self) -> u32 {
        self.img.height()
    }

    /// Sets one pixel; coordinates off the image (negative included) are ignored.
    pub fn put(&mut self, x: i64, y: i64, colour: Rgb<u8>) {
        if (0..self.img.width() as i64).contains(&x) && (0..self.img.height() as i64).contains(&y) {
            self.img.put_pixel(x as u32, y as u32, colour);
        }
    }

    /// Draws `s` with its top-left at (x, y); `vertical` text reads bottom to top, ending at y.
    pub fn text(&mut self, x: u32, y: u32, s: &str, vertical: bool) {
        self.text_in(x, y, s, vertical, INK);
    }

    pub fn text_in(&mut self, x: u32, y: u32, s: &str, vertical: bool, colour: Rgb<u8>) {
        use font8x8::UnicodeFonts;
        for (i, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..8i64 {
                    if bits & (1 << gx) == 0 {
                        continue;
                    }
                    let (i, gy) = (i as i64, gy as i64);
                    let (px, py) = if vertical {
                        // A quarter turn counter-clockwise: glyph rows become columns.
                        (x as i64 + gy, y as i64 - (8 * i + gx + 1))
                    } else {
                        (x as i64 + 8 * i + gx, y as i64 + gy)
                    };
                    self.put(px, py, colour);
                }
            }
        }
    }

    /// Fills the rectangle with its top-left at (x, y).
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, colour: Rgb<u8>) {
        for py in y..y + h {
            for px in x..x + w {
                self.put(px, py, colour);
            }
        }
    }

    /// A straight line from (x0, y0) to (x1, y1) (Bresenham), `thick` pixels high.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thick: i64, c: Rgb<u8>) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thick {
                self.put(x, y + t, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Pixel width of `s` in the font.
pub fn text_width(s: &str) -> u32 {
    CHAR_PX * s.chars().count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_both_ends_and_drawing_off_the_image_is_clipped() {
        let mut c = Canvas::new(10, 10);
        let red = Rgb([255, 0, 0]);
        c.line((1, 8), (8, 1), 1, red);
        assert_eq!(*c.img.get_pixel(1, 8), red);
        assert_eq!(*c.img.get_pixel(8, 1), red);
        assert_eq!(*c.img.get_pixel(4, 5), red);
        c.line((-5, -5), (20, 20), 2, red);
        c.text(8, 8, "long text off the edge", false);
        c.text(0, 3, "up", true);
    }
}

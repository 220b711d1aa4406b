//! Drawing scenes: muted textured backgrounds with flat, strongly coloured shapes on top.
//!
//! Geometry is in fractions of the image side so one scene renders at any size. Shape edges are
//! anti-aliased with 3×3 supersampling, which keeps small shapes recognisable at 32-64 px.
use image::{Rgb, RgbImage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// The object shapes. Each domain uses six of them, in label order (class label = colour index
/// × 6 + shape index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
    Ring,
    Star,
    Heart,
    Hexagon,
    Crescent,
    Arrow,
    Bar,
}

impl Shape {
    pub(crate) const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
        Shape::Ring,
    ];
    /// The second domain's shapes: none of them (or their names) occur in the first.
    pub(crate) const SYMBOLS: [Shape; 6] = [
        Shape::Star,
        Shape::Heart,
        Shape::Hexagon,
        Shape::Crescent,
        Shape::Arrow,
        Shape::Bar,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
            Shape::Star => "star",
            Shape::Heart => "heart",
            Shape::Hexagon => "hexagon",
            Shape::Crescent => "crescent",
            Shape::Arrow => "arrow",
            Shape::Bar => "bar",
        }
    }

    /// Whether the point `(u, v)`, in units of the half-size with the centre at 0, is inside.
    /// Areas are kept roughly equal (2-3.2 units²) so no shape is told apart by size alone.
    pub(crate) fn contains(self, u: f32, v: f32) -> bool {
        let (au, av) = (u.abs(), v.abs());
        match self {
            Shape::Circle => u * u + v * v <= 1.0,
            Shape::Ring => (0.25..=1.0).contains(&(u * u + v * v)),
            Shape::Square => au <= 0.9 && av <= 0.9,
            Shape::Diamond => au + av <= 1.1,
            // Apex up; the base is a little wider than the height so it reads as a triangle
            // rather than a wedge at small sizes.
            Shape::Triangle => (-1.0..=0.85).contains(&v) && au <= (v + 1.0) / 1.85 * 1.1,
            Shape::Cross => (au <= 0.33 && av <= 1.0) || (av <= 0.33 && au <= 1.0),
            // Five points, apex up: the radius swings between 0.5 and 1.15 with the angle.
            Shape::Star => {
                let turn = u.atan2(-v) / std::f32::consts::TAU * 5.0;
                let to_point = 2.0 * (turn - turn.round()).abs(); // 0 at a point, 1 between
                u * u + v * v <= (1.15 - 0.65 * to_point).powi(2)
            }
            // The classic implicit heart, point down (v grows downwards).
            Shape::Heart => {
                let (x, y) = (1.1 * u, -1.1 * v + 0.25);
                (x * x + y * y - 1.0).powi(3) - x * x * y.powi(3) <= 0.0
            }
            // Flat top and bottom, vertices at (±1, 0).
            Shape::Hexagon => av <= 0.87 && 0.87 * au + 0.5 * av <= 0.87,
            Shape::Crescent => u * u + v * v <= 1.0 && (u - 0.45).powi(2) + v * v > 0.64,
            // Pointing up: a triangular head over a shaft.
            Shape::Arrow => {
                ((-1.0..=0.0).contains(&v) && au <= (v + 1.0) * 0.9)
                    || ((0.0..=1.0).contains(&v) && au <= 0.32)
            }
            Shape::Bar => au <= 1.0 && av <= 0.42,
        }
    }
}

/// Object colours: saturated or extreme, far from each other and from every background colour.
pub(crate) const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 30, 30]),
    ("orange", [250, 140, 20]),
    ("yellow", [245, 225, 30]),
    ("green", [30, 170, 50]),
    ("blue", [30, 70, 230]),
    ("purple", [150, 50, 200]),
    ("white", [250, 250, 250]),
    ("black", [10, 10, 10]),
];

/// Background textures; `name` is the adjective captions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Texture {
    Solid,
    Stripes,
    Checker,
    Noise,
}

impl Texture {
    pub(crate) const ALL: [Texture; 4] = [
        Texture::Solid,
        Texture::Stripes,
        Texture::Checker,
        Texture::Noise,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Texture::Solid => "plain",
            Texture::Stripes => "striped",
            Texture::Checker => "checkered",
            Texture::Noise => "noisy",
        }
    }
}

/// A background: a texture in two muted colours.
#[derive(Debug, Clone)]
pub(crate) struct Background {
    pub texture: Texture,
    base: [u8; 3],
    alt: [u8; 3],
    /// Stripe/checker period in pixels at 64 px (scaled with the image).
    period: f32,
    /// Stripe direction: 0 horizontal, 1 vertical, 2 diagonal.
    orientation: u8,
}

impl Background {
    /// A random muted background. Channels stay within about 60..190 (noise included), well
    /// away from the object palette's white, black and saturated colours.
    pub(crate) fn random(texture: Texture, rng: &mut ChaCha8Rng) -> Self {
        let level = rng.random_range(90..=160i32);
        let base: [u8; 3] = std::array::from_fn(|_| (level + rng.random_range(-12..=12)) as u8);
        let delta = if level > 125 { -25 } else { 25 };
        let alt = base.map(|c| (c as i32 + delta) as u8);
        Self {
            texture,
            base,
            alt,
            period: rng.random_range(6.0..14.0),
            orientation: rng.random_range(0..3u8),
        }
    }

    fn paint(&self, img: &mut RgbImage, rng: &mut ChaCha8Rng) {
        let side = img.width() as f32;
        let period = self.period * side / 64.0;
        for (x, y, px) in img.enumerate_pixels_mut() {
            let (fx, fy) = (x as f32, y as f32);
            let colour = match self.texture {
                Texture::Solid => self.base,
                Texture::Noise => self
                    .base
                    .map(|c| (c as i32 + rng.random_range(-15..=15)) as u8),
                Texture::Stripes => {
                    let t = match self.orientation {
                        0 => fy,
                        1 => fx,
                        _ => (fx + fy) * std::f32::consts::FRAC_1_SQRT_2,
                    };
                    if (t / (period / 2.0)) as i32 % 2 == 0 {
                        self.base
                    } else {
                        self.alt
                    }
                }
                Texture::Checker => {
                    let cell = (period / 2.0).max(2.0);
                    if ((fx / cell) as i32 + (fy / cell) as i32) % 2 == 0 {
                        self.base
                    } else {
                        self.alt
                    }
                }
            };
            *px = Rgb(colour);
        }
    }
}

/// One flat-coloured shape. `cx`, `cy` and `size` (the side of its bounding box) are fractions
/// of the image side.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub shape: Shape,
    pub rgb: [u8; 3],
    pub cx: f32,
    pub cy: f32,
    pub size: f32,
}

impl Object {
    fn paint(&self, img: &mut RgbImage) {
        let side = img.width() as f32;
        let r = self.size * side / 2.0;
        let (cx, cy) = (self.cx * side, self.cy * side);
        // Shapes reach at most 1.1 half-sizes from the centre (the diamond).
        let reach = 1.1 * r + 1.0;
        let clamp = |v: f32| v.clamp(0.0, side - 1.0) as u32;
        const SUB: [f32; 3] = [1.0 / 6.0, 0.5, 5.0 / 6.0];
        for y in clamp(cy - reach)..=clamp(cy + reach) {
            for x in clamp(cx - reach)..=clamp(cx + reach) {
                let mut hits = 0u32;
                for sy in SUB {
                    for sx in SUB {
                        let u = (x as f32 + sx - cx) / r;
                        let v = (y as f32 + sy - cy) / r;
                        hits += u32::from(self.shape.contains(u, v));
                    }
                }
                if hits == 0 {
                    continue;
                }
                let a = hits as f32 / 9.0;
                let px = img.get_pixel_mut(x, y);
                for (dst, src) in px.0.iter_mut().zip(self.rgb) {
                    *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
                }
            }
        }
    }
}

/// Renders `objects` over `background` into a `side`×`side` image. `rng` drives the noise
/// texture only, so the same scene and RNG state always give the same pixels.
pub(crate) fn render(
    side: u32,
    background: &Background,
    objects: &[Object],
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let mut img = RgbImage::new(side, side);
    background.paint(&mut img, rng);
    for obj in objects {
        obj.paint(&mut img);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn mean_rgb(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> [f32; 3] {
        let mut sum = [0f32; 3];
        for y in y0..y1 {
            for x in x0..x1 {
                for (s, c) in sum.iter_mut().zip(img.get_pixel(x, y).0) {
                    *s += c as f32;
                }
            }
        }
        sum.map(|s| s / ((x1 - x0) * (y1 - y0)) as f32)
    }

    #[test]
    fn shapes_differ_and_have_comparable_area() {
        let area = |s: Shape| {
            let n = 200;
            (0..n * n)
                .filter(|i| {
                    let u = (i % n) as f32 / n as f32 * 2.4 - 1.2;
                    let v = (i / n) as f32 / n as f32 * 2.4 - 1.2;
                    s.contains(u, v)
                })
                .count() as f32
                * (2.4f32 / n as f32).powi(2)
        };
        for s in Shape::ALL.into_iter().chain(Shape::SYMBOLS) {
            let a = area(s);
            assert!((1.0..3.4).contains(&a), "{} area {a}", s.name());
        }
        // The centre separates ring from circle, the corners square from diamond.
        assert!(Shape::Circle.contains(0.0, 0.0) && !Shape::Ring.contains(0.0, 0.0));
        assert!(Shape::Square.contains(0.85, 0.85) && !Shape::Diamond.contains(0.85, 0.85));
    }

    #[test]
    fn drawn_square_has_its_colour_inside_its_box() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for texture in Texture::ALL {
            for (name, rgb) in COLOURS {
                let bg = Background::random(texture, &mut rng);
                let obj = Object {
                    shape: Shape::Square,
                    rgb,
                    cx: 0.3,
                    cy: 0.6,
                    size: 0.3,
                };
                let img = render(64, &bg, &[obj], &mut rng);
                // The square spans 0.9 half-sizes: x 0.165..0.435, y 0.465..0.735 of 64 px.
                let m = mean_rgb(&img, 12, 31, 27, 46);
                let dist = m
                    .iter()
                    .zip(rgb)
                    .map(|(a, b)| (a - b as f32).abs())
                    .fold(0f32, f32::max);
                assert!(dist < 2.0, "{name} on {:?}: mean {m:?}", texture);
                // Far from the object the background is muted, not an object colour.
                let corner = mean_rgb(&img, 50, 0, 64, 14);
                assert!(
                    corner.iter().all(|c| (50.0..200.0).contains(c)),
                    "{corner:?}"
                );
            }
        }
    }
}

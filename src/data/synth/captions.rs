//! Captions: several templates per scene, always naming each object as "COLOUR SHAPE" so the
//! words a zero-shot prompt uses are the words training saw, in the same order.
use super::draw::{COLOURS, Shape, Texture};
use super::{Item, Position, Relation};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Generic zero-shot prompt templates written to `templates.txt`; `{}` is the class name.
pub(crate) const ZERO_SHOT_TEMPLATES: [&str; 6] = [
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a {}.",
    "there is a {} in the image.",
];

fn pick<'a>(rng: &mut ChaCha8Rng, options: &[&'a str]) -> &'a str {
    options[rng.random_range(0..options.len())]
}

/// "a" or "an" for the word that follows.
fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `phrase` with its indefinite article: "an orange ring".
fn a(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// The class name of an item: "red circle".
pub(crate) fn class_name(colour: usize, shape: Shape) -> String {
    format!("{} {}", COLOURS[colour].0, shape.name())
}

fn size_word(rng: &mut ChaCha8Rng, large: bool) -> &'static str {
    if large {
        pick(rng, &["large", "big"])
    } else {
        pick(rng, &["small", "little"])
    }
}

fn where_phrase(rng: &mut ChaCha8Rng, pos: Position) -> &'static str {
    match pos {
        Position::Left => pick(rng, &["on the left", "at the left side"]),
        Position::Right => pick(rng, &["on the right", "at the right side"]),
        Position::Top => pick(rng, &["near the top", "at the top"]),
        Position::Bottom => pick(rng, &["near the bottom", "at the bottom"]),
        Position::Center => pick(rng, &["in the center", "in the middle"]),
    }
}

/// A caption for a one-object scene.
pub(crate) fn single(item: &Item, texture: Texture, rng: &mut ChaCha8Rng) -> String {
    let class = class_name(item.colour, item.shape);
    let sized = format!("{} {class}", size_word(rng, item.large));
    let place = where_phrase(rng, item.pos);
    let bg = format!("{} background", texture.name());
    match rng.random_range(0..9) {
        0 => format!("a photo of {}", a(&sized)),
        1 => format!("{} on {}", a(&class), a(&bg)),
        2 => format!("there is {} {place}", a(&sized)),
        3 => a(&class),
        4 => format!("{} {place} on {}", a(&sized), a(&bg)),
        5 => format!("an image of {} {place}", a(&class)),
        6 => format!("a drawing of {}", a(&sized)),
        7 => format!("{sized}, {place}"),
        _ => format!("a picture of {} on {}", a(&class), a(&bg)),
    }
}

/// A caption for a two-object scene where `first` is left of / above `second`.
pub(crate) fn pair(
    first: &Item,
    second: &Item,
    relation: Relation,
    texture: Texture,
    rng: &mut ChaCha8Rng,
) -> String {
    let one = a(&class_name(first.colour, first.shape));
    let two = a(&class_name(second.colour, second.shape));
    let (forward, backward) = match relation {
        Relation::LeftOf => (
            pick(rng, &["left of", "to the left of"]),
            pick(rng, &["right of", "to the right of"]),
        ),
        Relation::Above => (
            pick(rng, &["above", "over"]),
            pick(rng, &["below", "under"]),
        ),
    };
    match rng.random_range(0..5) {
        0 | 1 => format!("{one} {forward} {two}"),
        2 => format!("{two} {backward} {one}"),
        3 => format!("{one} and {two}"),
        _ => format!(
            "{one} {forward} {two} on {}",
            a(&format!("{} background", texture.name()))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn captions_name_colour_and_shape_with_correct_articles() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let orange_ring = Item {
            colour: 1,
            shape: Shape::Ring,
            large: false,
            pos: Position::Left,
        };
        for _ in 0..50 {
            let c = single(&orange_ring, Texture::Stripes, &mut rng);
            assert!(c.contains("orange ring"), "{c}");
            assert!(
                !c.contains(" a orange") && !c.starts_with("a orange"),
                "{c}"
            );
            assert!(c.is_ascii() && c == c.to_lowercase(), "{c}");
        }
        let red_square = Item {
            colour: 0,
            shape: Shape::Square,
            large: true,
            pos: Position::Right,
        };
        for _ in 0..50 {
            let c = pair(
                &orange_ring,
                &red_square,
                Relation::LeftOf,
                Texture::Solid,
                &mut rng,
            );
            assert!(
                c.contains("an orange ring") && c.contains("a red square"),
                "{c}"
            );
            assert!(!c.contains("above") && !c.contains("below"), "{c}");
        }
    }
}

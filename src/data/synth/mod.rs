//! The embedded default dataset: procedurally drawn shapes with captions, written as WebDataset
//! shards, plus a zero-shot evaluation split whose classes partly never occur in training.
//!
//! Classes are colour × shape combinations ("red circle"). A fixed set of them ([`HELDOUT`]) is
//! kept out of every training image and caption, even as the second object of a two-object
//! scene, so zero-shot accuracy on them measures composition of seen words rather than recall.
//! Every sample draws from its own ChaCha stream keyed by (seed, split, index), so the output is
//! byte-identical for the same options however rayon schedules the work.
mod captions;
mod draw;
mod sink;

use crate::data::writer::{ShardInfo, ShardWriter, WriterError};
use draw::{Background, COLOURS, Object, Shape, Texture};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sink::{Encoded, Sink, brace_spec, encode, remove_old_shards, write_text};
use std::fs;
use std::path::PathBuf;

/// Colour × shape combinations (indices into the colour and shape tables) held out of training.
/// One per colour and at most two per shape, so every colour and every shape still appears in
/// training with other partners.
pub const HELDOUT: [(usize, usize); 8] = [
    (0, 1), // red square
    (1, 5), // orange ring
    (2, 4), // yellow cross
    (3, 2), // green triangle
    (4, 0), // blue circle
    (5, 3), // purple diamond
    (6, 2), // white triangle
    (7, 0), // black circle
];

/// Share of training samples that show two objects and a spatial relation.
const PAIR_FRACTION: f64 = 0.2;
/// JPEG quality of every image, as img2dataset's default.
const JPEG_QUALITY: u8 = 90;

/// Which shapes the dataset draws. Both use the same colours, class layout and held-out pairs;
/// `symbols` (star, heart, hexagon, crescent, arrow, bar) shares no shape with `shapes`, so a
/// model trained on one meets new words and new silhouettes in the other — a fine-tuning domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    #[default]
    Shapes,
    Symbols,
}

impl Domain {
    fn shapes(self) -> &'static [Shape; 6] {
        match self {
            Domain::Shapes => &Shape::ALL,
            Domain::Symbols => &Shape::SYMBOLS,
        }
    }
}

/// How the samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// WebDataset shards (`train-NNNNNN.tar`, `eval-NNNNNN.tar` with `.cls` labels).
    #[default]
    Shards,
    /// Loose files, as a user's own data arrives: `images/KEY.jpg` + `captions.csv` for
    /// training (`cliptrain data build` packs them) and an ImageFolder `eval/<class>/KEY.jpg`.
    Folder,
}

/// What `generate` writes and where.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Output folder; created if missing.
    pub out: PathBuf,
    /// Training samples.
    pub train: usize,
    /// Zero-shot evaluation samples (one object each, classes in turn).
    pub eval: usize,
    /// Image side in pixels.
    pub image_size: u32,
    /// Everything random derives from it: same options and seed, byte-identical output.
    pub seed: u64,
    /// Samples per shard.
    pub shard_size: usize,
    pub domain: Domain,
    pub layout: Layout,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("data/synth"),
            train: 20_000,
            eval: 2_000,
            image_size: 64,
            seed: 0,
            shard_size: 2_500,
            domain: Domain::Shapes,
            layout: Layout::Shards,
        }
    }
}

/// Why the dataset could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synth options: {0}")]
    Options(String),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {split} sample {index} as JPEG: {source}")]
    Encode {
        split: &'static str,
        index: usize,
        #[source]
        source: image::ImageError,
    },
}

/// One split as written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitSummary {
    pub samples: usize,
    /// Samples showing two objects (always 0 for eval).
    pub two_object: usize,
    pub shards: Vec<ShardInfo>,
    /// Brace spec naming all shards, e.g. `DIR/train-{000000..000007}.tar`; empty when none.
    pub spec: String,
}

/// What `generate` wrote: both splits, every class name (label i = entry i) and the held-out ones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthSummary {
    pub train: SplitSummary,
    pub eval: SplitSummary,
    pub classes: Vec<String>,
    pub heldout: Vec<String>,
}

/// Where an object sits; single-object captions say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Left,
    Right,
    Top,
    Bottom,
    Center,
}

impl Position {
    const ALL: [Position; 5] = [
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::Center,
    ];

    fn anchor(self) -> (f32, f32) {
        match self {
            Position::Left => (0.27, 0.5),
            Position::Right => (0.73, 0.5),
            Position::Top => (0.5, 0.27),
            Position::Bottom => (0.5, 0.73),
            Position::Center => (0.5, 0.5),
        }
    }
}

/// How the first object of a pair relates to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    LeftOf,
    Above,
}

/// An object as captions describe it.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub colour: usize,
    pub shape: Shape,
    pub large: bool,
    pub pos: Position,
}

/// Which split a sample belongs to; also its RNG stream's high bits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Split {
    Train,
    Eval,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// Number of zero-shot classes.
pub fn num_classes() -> usize {
    COLOURS.len() * Shape::ALL.len()
}

/// Every class name, label order: colour-major ("red circle", "red square", ...).
pub fn class_names(domain: Domain) -> Vec<String> {
    (0..num_classes()).map(|l| label_name(domain, l)).collect()
}

/// The held-out class names, in label order.
pub fn heldout_names(domain: Domain) -> Vec<String> {
    (0..num_classes())
        .filter(|&l| is_heldout(l))
        .map(|l| label_name(domain, l))
        .collect()
}

fn label_name(domain: Domain, label: usize) -> String {
    let (c, s) = split_label(label);
    captions::class_name(c, domain.shapes()[s])
}

fn split_label(label: usize) -> (usize, usize) {
    (label / Shape::ALL.len(), label % Shape::ALL.len())
}

fn is_heldout(label: usize) -> bool {
    HELDOUT.contains(&split_label(label))
}

/// The RNG of one sample: an independent ChaCha stream per (split, index) under `seed`.
fn sample_rng(seed: u64, split: Split, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let split_bits = match split {
        Split::Train => 0u64,
        Split::Eval => 1u64,
    };
    rng.set_stream((split_bits << 48) | index as u64);
    rng
}

/// A lone object of class `label`: random size, position and colour jitter.
fn single_object(domain: Domain, label: usize, rng: &mut ChaCha8Rng) -> (Item, Object) {
    let (colour, shape) = split_label(label);
    let shape = domain.shapes()[shape];
    let large = rng.random_bool(0.5);
    let size = if large {
        rng.random_range(0.38..0.48)
    } else {
        rng.random_range(0.22..0.28)
    };
    let pos = Position::ALL[rng.random_range(0..Position::ALL.len())];
    let (ax, ay) = pos.anchor();
    let cx = ax + rng.random_range(-0.04..0.04);
    let cy = ay + rng.random_range(-0.04..0.04);
    let item = Item {
        colour,
        shape,
        large,
        pos,
    };
    (item, place(colour, shape, cx, cy, size, rng))
}

/// An object at the given centre, kept inside the image, its colour jittered slightly so the
/// model learns colour names rather than exact RGB values.
fn place(colour: usize, shape: Shape, cx: f32, cy: f32, size: f32, rng: &mut ChaCha8Rng) -> Object {
    let margin = 0.55 * size + 0.01;
    let rgb = COLOURS[colour]
        .1
        .map(|c| (c as i32 + rng.random_range(-12..=12)).clamp(0, 255) as u8);
    Object {
        shape,
        rgb,
        cx: cx.clamp(margin, 1.0 - margin),
        cy: cy.clamp(margin, 1.0 - margin),
        size,
    }
}

/// One drawn sample before encoding.
struct Sample {
    image: image::RgbImage,
    caption: String,
    label: Option<usize>,
    objects: Vec<Object>,
}

fn random_background(rng: &mut ChaCha8Rng) -> Background {
    let texture = Texture::ALL[rng.random_range(0..Texture::ALL.len())];
    Background::random(texture, rng)
}

/// A training sample: mostly one object of a seen class, sometimes two seen classes in a
/// left/right or above/below arrangement.
fn train_sample(domain: Domain, seen: &[usize], side: u32, rng: &mut ChaCha8Rng) -> Sample {
    let bg = random_background(rng);
    if !rng.random_bool(PAIR_FRACTION) {
        let label = seen[rng.random_range(0..seen.len())];
        let (item, obj) = single_object(domain, label, rng);
        let caption = captions::single(&item, bg.texture, rng);
        let image = draw::render(side, &bg, std::slice::from_ref(&obj), rng);
        return Sample {
            image,
            caption,
            label: Some(label),
            objects: vec![obj],
        };
    }
    let i = rng.random_range(0..seen.len());
    // Drawn from the other n-1 classes, so the two objects never share a class.
    let mut j = rng.random_range(0..seen.len() - 1);
    if j >= i {
        j += 1;
    }
    let (first, second) = (seen[i], seen[j]);
    let relation = if rng.random_bool(0.5) {
        Relation::LeftOf
    } else {
        Relation::Above
    };
    let mut items = Vec::with_capacity(2);
    let mut objects = Vec::with_capacity(2);
    for (label, along) in [(first, 0.27f32), (second, 0.73)] {
        let (colour, shape) = split_label(label);
        let shape = domain.shapes()[shape];
        let size = rng.random_range(0.24..0.32);
        let along = along + rng.random_range(-0.03..0.03);
        let across = 0.5 + rng.random_range(-0.15..0.15);
        let (cx, cy, pos) = match (relation, along < 0.5) {
            (Relation::LeftOf, true) => (along, across, Position::Left),
            (Relation::LeftOf, false) => (along, across, Position::Right),
            (Relation::Above, true) => (across, along, Position::Top),
            (Relation::Above, false) => (across, along, Position::Bottom),
        };
        items.push(Item {
            colour,
            shape,
            large: false,
            pos,
        });
        objects.push(place(colour, shape, cx, cy, size, rng));
    }
    let caption = captions::pair(&items[0], &items[1], relation, bg.texture, rng);
    let image = draw::render(side, &bg, &objects, rng);
    Sample {
        image,
        caption,
        label: None,
        objects,
    }
}

/// An eval sample: one object, classes in turn (index mod classes) so every class, held-out
/// ones included, is equally represented.
fn eval_sample(domain: Domain, index: usize, side: u32, rng: &mut ChaCha8Rng) -> Sample {
    let bg = random_background(rng);
    let label = index % num_classes();
    let (item, obj) = single_object(domain, label, rng);
    let caption = captions::single(&item, bg.texture, rng);
    let image = draw::render(side, &bg, std::slice::from_ref(&obj), rng);
    Sample {
        image,
        caption,
        label: Some(label),
        objects: vec![obj],
    }
}

fn write_split(
    opts: &SynthOptions,
    split: Split,
    count: usize,
) -> Result<SplitSummary, SynthError> {
    let seen: Vec<usize> = (0..num_classes()).filter(|&l| !is_heldout(l)).collect();
    let mut sink = match opts.layout {
        Layout::Shards => Sink::Shards(ShardWriter::new(
            &opts.out,
            split.prefix(),
            opts.shard_size,
        )?),
        Layout::Folder => Sink::Folder {
            dir: opts.out.join(match split {
                Split::Train => "images",
                Split::Eval => "eval",
            }),
            csv: vec!["file,caption".to_string()],
            classes: class_names(opts.domain),
        },
    };
    let mut two_object = 0;
    // One shard's samples at a time are drawn in parallel, then written in index order.
    for start in (0..count).step_by(opts.shard_size) {
        let end = (start + opts.shard_size).min(count);
        let batch: Vec<Result<Encoded, SynthError>> = (start..end)
            .into_par_iter()
            .map(|index| {
                let mut rng = sample_rng(opts.seed, split, index);
                let sample = match split {
                    Split::Train => train_sample(opts.domain, &seen, opts.image_size, &mut rng),
                    Split::Eval => eval_sample(opts.domain, index, opts.image_size, &mut rng),
                };
                encode(split, index, sample)
            })
            .collect();
        for (index, encoded) in (start..end).zip(batch) {
            let e = encoded?;
            two_object += usize::from(e.objects == 2);
            sink.write(&format!("{index:09}"), &e)?;
        }
    }
    let (shards, spec) = match sink {
        Sink::Shards(writer) => {
            let shards = writer.finish()?;
            let spec = brace_spec(&opts.out, split.prefix(), shards.len());
            (shards, spec)
        }
        Sink::Folder { dir, csv, .. } => {
            if split == Split::Train {
                write_text(opts.out.join("captions.csv"), &csv)?;
            }
            (Vec::new(), dir.display().to_string())
        }
    };
    Ok(SplitSummary {
        samples: count,
        two_object,
        spec,
        shards,
    })
}

/// Generates the dataset into `opts.out`: train and eval shards, class lists, zero-shot
/// templates and `stats.json`. Replaces shards of an earlier run in the same folder.
pub fn generate(opts: &SynthOptions) -> Result<SynthSummary, SynthError> {
    if !(16..=1024).contains(&opts.image_size) {
        return Err(SynthError::Options(format!(
            "image_size = {} must be within 16..=1024",
            opts.image_size
        )));
    }
    if opts.shard_size == 0 {
        return Err(SynthError::Options("shard_size must be at least 1".into()));
    }
    fs::create_dir_all(&opts.out).map_err(|source| SynthError::Io {
        op: "creating",
        path: opts.out.clone(),
        source,
    })?;
    remove_old_shards(&opts.out)?;
    if opts.layout == Layout::Folder {
        for sub in ["images", "eval"] {
            let dir = opts.out.join(sub);
            if dir.exists() {
                return Err(SynthError::Options(format!(
                    "{} already exists; choose an empty --out folder (the folder layout never \
                     overwrites files it did not write in this run)",
                    dir.display()
                )));
            }
        }
    }
    let train = write_split(opts, Split::Train, opts.train)?;
    let eval = write_split(opts, Split::Eval, opts.eval)?;

    let classes = class_names(opts.domain);
    let heldout = heldout_names(opts.domain);
    let seen: Vec<String> = classes
        .iter()
        .filter(|c| !heldout.contains(c))
        .cloned()
        .collect();
    let templates: Vec<String> = captions::ZERO_SHOT_TEMPLATES.map(String::from).to_vec();
    write_text(opts.out.join("classnames.txt"), &classes)?;
    write_text(opts.out.join("classes_seen.txt"), &seen)?;
    write_text(opts.out.join("classes_heldout.txt"), &heldout)?;
    write_text(opts.out.join("templates.txt"), &templates)?;

    let shard_list = |s: &SplitSummary| {
        s.shards
            .iter()
            .map(|i| {
                let name = i.path.file_name().unwrap_or_default().to_string_lossy();
                serde_json::json!({ "name": name, "samples": i.samples })
            })
            .collect::<Vec<_>>()
    };
    let split_json = |s: &SplitSummary| {
        serde_json::json!({
            "samples": s.samples,
            "two_object": s.two_object,
            "spec": s.spec,
            "shards": shard_list(s),
        })
    };
    let stats = serde_json::json!({
        "generator": "cliptrain data synth",
        "domain": opts.domain,
        "layout": opts.layout,
        "seed": opts.seed,
        "image_size": opts.image_size,
        "shard_size": opts.shard_size,
        "jpeg_quality": JPEG_QUALITY,
        "train": split_json(&train),
        "eval": split_json(&eval),
        "num_classes": classes.len(),
        "heldout": heldout,
        "seen": seen,
        "files": {
            "classnames": "classnames.txt",
            "classes_seen": "classes_seen.txt",
            "classes_heldout": "classes_heldout.txt",
            "templates": "templates.txt",
        },
    });
    let stats_path = opts.out.join("stats.json");
    let mut text = serde_json::to_string_pretty(&stats).expect("JSON values always serialise");
    text.push('\n');
    fs::write(&stats_path, text).map_err(|source| SynthError::Io {
        op: "writing",
        path: stats_path,
        source,
    })?;
    Ok(SynthSummary {
        train,
        eval,
        classes,
        heldout,
    })
}

#[cfg(test)]
mod tests;

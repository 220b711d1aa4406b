//! `cliptrain data filter`: a shard set cut down by rules: a CLIP-score threshold (`data score`'s
//! output) or DataComp's keep-the-top-fraction rule, caption rules and an image-size rule.
//! Kept samples are copied member by member, byte for byte, into new shards; `stats.json`
//! counts every sample by what decided it.
use super::spec::Shard;
use super::stream::{ShardStream, StreamOptions};
use super::writer::{ShardInfo, ShardWriter};
use super::{DataError, SkipReason};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Writer(#[from] super::writer::WriterError),
    #[error("{}: {reason}", path.display())]
    Scores { path: PathBuf, reason: String },
    #[error("{0}")]
    Rule(String),
}

/// What to keep. Every rule given must pass.
#[derive(Debug, Clone, Default)]
pub struct FilterRules {
    /// Keep samples scoring at least this.
    pub min_score: Option<f32>,
    /// Keep the best-scoring fraction, in (0, 1] (DataComp's CLIP-score filter).
    pub keep_fraction: Option<f64>,
    /// Captions of at least this many words.
    pub min_words: usize,
    /// Captions whose letters are at least this fraction ASCII (a cheap stand-in for "English").
    pub min_ascii_letters: Option<f64>,
    /// Images whose shorter side is at least this (read from the header only).
    pub min_side: u32,
}

/// Why a sample was dropped, as `stats.json` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drop {
    /// Below the score threshold.
    LowScore,
    /// No row in the scores (`data score` skipped it, or it was not scored).
    Unscored,
    FewWords,
    NonAsciiCaption,
    SmallImage,
    /// Unusable as a training sample (no caption, no image, an undecodable header).
    Unusable,
}

/// What a filter did.
#[derive(Debug, Serialize)]
pub struct FilterStats {
    pub seen: usize,
    pub kept: usize,
    pub dropped: BTreeMap<Drop, usize>,
    /// The score threshold applied (the larger of `min_score` and the fraction's cut).
    pub threshold: Option<f32>,
    pub shards: Vec<ShardInfo>,
    /// Every score read, for the histogram.
    #[serde(skip)]
    pub scores: Vec<f32>,
}

/// The scores a `data score` folder holds, by (shard, key).
pub fn read_scores(dir: &Path) -> Result<HashMap<(String, String), f32>, FilterError> {
    let bad = |path: &Path, reason: String| FilterError::Scores {
        path: path.to_path_buf(),
        reason,
    };
    if !dir.join("score.json").is_file() {
        return Err(bad(
            dir,
            "has no score.json: write it with `cliptrain data score`".into(),
        ));
    }
    let mut out = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| bad(&path, e.to_string()))?;
        for (i, line) in text.lines().enumerate() {
            let row: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| bad(&path, format!("line {}: {e}", i + 1)))?;
            let field = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(shard), Some(key), Some(score)) = (
                field("shard"),
                field("key"),
                row.get("score").and_then(|v| v.as_f64()),
            ) else {
                return Err(bad(
                    &path,
                    format!("line {}: needs \"shard\", \"key\" and \"score\"", i + 1),
                ));
            };
            out.insert((shard, key), score as f32);
        }
    }
    if out.is_empty() {
        return Err(bad(dir, "holds no scores (no NNNNNN.jsonl rows)".into()));
    }
    Ok(out)
}

/// The score a sample needs to be among the best `fraction` of `scores` (ties kept).
pub fn fraction_threshold(scores: &[f32], fraction: f64) -> Result<f32, FilterError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(FilterError::Rule(format!(
            "--keep-fraction {fraction} must be in (0, 1]"
        )));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    Ok(sorted.get(n - 1).copied().unwrap_or(f32::NEG_INFINITY))
}

fn caption_rule(text: &str, rules: &FilterRules) -> Option<Drop> {
    if text.split_whitespace().count() < rules.min_words {
        return Some(Drop::FewWords);
    }
    if let Some(min) = rules.min_ascii_letters {
        let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
        let ascii = letters.iter().filter(|c| c.is_ascii()).count();
        if !letters.is_empty() && (ascii as f64) < min * letters.len() as f64 {
            return Some(Drop::NonAsciiCaption);
        }
    }
    None
}

/// The shorter side of an image from its header, without decoding the pixels.
fn shorter_side(bytes: &[u8]) -> Option<u32> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let (w, h) = reader.into_dimensions().ok()?;
    Some(w.min(h))
}

/// Reads `shards` once, in order, and writes the samples `rules` keep into
/// `out/PREFIX-NNNNNN.tar` (`shard_size` a shard), with `scores` from [`read_scores`] when a
/// score rule is given. `keys` says which members are the image and the caption.
pub fn filter(
    shards: Vec<Shard>,
    keys: &super::sample::SampleKeys,
    scores: Option<&HashMap<(String, String), f32>>,
    rules: &FilterRules,
    out: &Path,
    (prefix, shard_size): (&str, usize),
) -> Result<FilterStats, FilterError> {
    let scored = rules.min_score.is_some() || rules.keep_fraction.is_some();
    if scored && scores.is_none() {
        return Err(FilterError::Rule(
            "--min-score and --keep-fraction need --scores (a `data score` folder)".into(),
        ));
    }
    let all: Vec<f32> = scores
        .map(|s| s.values().copied().collect())
        .unwrap_or_default();
    let threshold = match (rules.min_score, rules.keep_fraction) {
        (None, None) => None,
        (m, f) => {
            let cut = f.map(|f| fraction_threshold(&all, f)).transpose()?;
            Some(
                m.unwrap_or(f32::NEG_INFINITY)
                    .max(cut.unwrap_or(f32::NEG_INFINITY)),
            )
        }
    };
    let opts = StreamOptions::once();
    let mut stream = ShardStream::new(shards, opts)?;
    let mut writer = ShardWriter::new(out, prefix, shard_size)?;
    let mut stats = FilterStats {
        seen: 0,
        kept: 0,
        dropped: BTreeMap::new(),
        threshold,
        shards: Vec::new(),
        scores: all,
    };
    while let Some(s) = stream.next_sample()? {
        stats.seen += 1;
        let verdict = (|| -> Result<Option<Drop>, SkipReason> {
            let caption = super::sample::caption_of(&s.raw, keys)?;
            let image = super::sample::image_of(&s.raw, keys)?;
            if let Some(t) = threshold {
                let score = scores.and_then(|m| m.get(&(s.shard.clone(), s.raw.key.clone())));
                match score {
                    None => return Ok(Some(Drop::Unscored)),
                    Some(v) if *v < t => return Ok(Some(Drop::LowScore)),
                    Some(_) => {}
                }
            }
            if let Some(d) = caption_rule(&caption, rules) {
                return Ok(Some(d));
            }
            if rules.min_side > 0 {
                match shorter_side(image) {
                    Some(side) if side >= rules.min_side => {}
                    Some(_) => return Ok(Some(Drop::SmallImage)),
                    None => return Err(SkipReason::UndecodableImage),
                }
            }
            Ok(None)
        })();
        match verdict {
            Ok(None) => {
                let members: Vec<(&str, &[u8])> = s
                    .raw
                    .members
                    .iter()
                    .map(|(e, b)| (e.as_str(), b.as_slice()))
                    .collect();
                writer.write(&s.raw.key, &members)?;
                stats.kept += 1;
            }
            Ok(Some(d)) => *stats.dropped.entry(d).or_default() += 1,
            Err(_) => *stats.dropped.entry(Drop::Unusable).or_default() += 1,
        }
    }
    stats.shards = writer.finish()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fraction_rule_keeps_the_top_and_refuses_a_bad_fraction() {
        let s = [0.1, 0.5, 0.3, 0.9, 0.7];
        assert_eq!(fraction_threshold(&s, 0.4).unwrap(), 0.7);
        assert_eq!(fraction_threshold(&s, 1.0).unwrap(), 0.1);
        assert_eq!(fraction_threshold(&s, 0.01).unwrap(), 0.9);
        for bad in [0.0, 1.5, -0.2, f64::NAN] {
            let e = fraction_threshold(&s, bad).unwrap_err().to_string();
            assert!(e.contains("must be in (0, 1]"), "{e}");
        }
    }

    #[test]
    fn caption_rules_count_words_and_ascii_letters() {
        let rules = FilterRules {
            min_words: 3,
            min_ascii_letters: Some(0.8),
            ..FilterRules::default()
        };
        assert_eq!(caption_rule("a red circle", &rules), None);
        assert_eq!(caption_rule("a circle", &rules), Some(Drop::FewWords));
        assert_eq!(caption_rule("ein roter Kreis", &rules), None);
        assert_eq!(
            caption_rule("красный круг здесь", &rules),
            Some(Drop::NonAsciiCaption)
        );
    }
}

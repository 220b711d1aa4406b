//! `cliptrain data inspect`: what a set of shards holds, shard by shard — samples, member keys,
//! what is missing or broken and why, caption lengths and image sizes. Every image is decoded
//! (in parallel), so "ok" means exactly what the training loader would accept.
use super::sample::{CaptionDraw, SampleKeys, caption_of, captions_of, image_of};
use super::spec::Shard;
use super::tarstream::{RawSample, SampleReader, TarEvent};
use super::transform::decode_rgb8;
use super::{SkipCounts, SkipReason};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Summary statistics of a list of numbers.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Distribution {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Distribution {
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            count: v.len(),
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: at(0.5),
            p95: at(0.95),
            max: v[v.len() - 1],
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardReport {
    pub shard: String,
    /// Samples found (groups of members sharing a key), usable or not.
    pub samples: u64,
    pub samples_ok: u64,
    pub skipped: SkipCounts,
    /// Member extension → number of samples having it.
    pub keys: BTreeMap<String, u64>,
    pub caption_chars: Distribution,
    pub caption_words: Distribution,
    /// Captions a usable sample has (the text member and numbered ones, a JSON list, or the
    /// `data.caption_fields` present) → how many samples have that many.
    pub captions_per_sample: BTreeMap<usize, u64>,
    pub image_width: Distribution,
    pub image_height: Distribution,
    /// Set when the shard could not be read to its end.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InspectReport {
    pub shards_total: usize,
    pub samples: u64,
    pub samples_ok: u64,
    pub skipped: SkipCounts,
    pub keys: BTreeMap<String, u64>,
    pub caption_chars: Distribution,
    pub captions_per_sample: BTreeMap<usize, u64>,
    pub image_width: Distribution,
    pub image_height: Distribution,
    pub shards: Vec<ShardReport>,
}

/// Per-sample findings, gathered in parallel.
struct Finding {
    exts: Vec<String>,
    /// Caption characters and words, caption count, image width and height.
    result: Result<(usize, usize, usize, u32, u32), SkipReason>,
}

/// Reads and decodes every sample of `shards` on `threads` threads.
pub fn inspect(
    shards: &[Shard],
    keys: &SampleKeys,
    max_pixels: u64,
    threads: usize,
) -> InspectReport {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("thread pool");
    let mut report = InspectReport {
        shards_total: shards.len(),
        ..Default::default()
    };
    let (mut chars, mut widths, mut heights) = (vec![], vec![], vec![]);
    for shard in shards {
        let mut r = ShardReport {
            shard: shard.url(),
            ..Default::default()
        };
        // Caption chars and words, image widths and heights of the usable samples.
        let (mut c, mut wd, mut w, mut h) = (vec![], vec![], vec![], vec![]);
        let mut batch: Vec<RawSample> = Vec::new();
        let mut consume = |batch: &mut Vec<RawSample>, r: &mut ShardReport| {
            let found: Vec<Finding> = pool.install(|| {
                batch
                    .par_drain(..)
                    .map(|s| examine(&s, keys, max_pixels))
                    .collect()
            });
            for f in found {
                for e in f.exts {
                    *r.keys.entry(e).or_default() += 1;
                }
                match f.result {
                    Ok((nc, nw, count, iw, ih)) => {
                        r.samples_ok += 1;
                        *r.captions_per_sample.entry(count).or_default() += 1;
                        c.push(nc as f64);
                        wd.push(nw as f64);
                        w.push(iw as f64);
                        h.push(ih as f64);
                    }
                    Err(reason) => r.skipped.add(reason),
                }
            }
        };
        match shard.open() {
            Err(e) => {
                r.skipped.add(SkipReason::UnreadableShard);
                r.error = Some(e.to_string());
            }
            Ok(input) => {
                let mut reader = SampleReader::new(input);
                let mut read_to_end = true;
                while let Some(ev) = reader.next_event() {
                    match ev {
                        TarEvent::Sample(s) => {
                            r.samples += 1;
                            batch.push(s);
                            if batch.len() >= 512 {
                                consume(&mut batch, &mut r);
                            }
                        }
                        TarEvent::Skipped(reason) => {
                            r.samples += 1;
                            r.skipped.add(reason);
                        }
                        TarEvent::Broken(reason, msg) => {
                            r.skipped.add(reason);
                            r.error = Some(msg);
                            read_to_end = false;
                        }
                    }
                }
                consume(&mut batch, &mut r);
                if let Err(e) = reader.into_inner().finish(read_to_end) {
                    r.skipped.add(SkipReason::UnreadableShard);
                    r.error = Some(e.to_string());
                }
            }
        }
        chars.extend(c.iter().copied());
        r.caption_chars = Distribution::of(c);
        r.caption_words = Distribution::of(wd);
        r.image_width = Distribution::of(w.clone());
        r.image_height = Distribution::of(h.clone());
        widths.extend(w);
        heights.extend(h);
        report.samples += r.samples;
        report.samples_ok += r.samples_ok;
        for (reason, n) in &r.skipped.0 {
            *report.skipped.0.entry(*reason).or_default() += n;
        }
        for (k, n) in &r.keys {
            *report.keys.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &r.captions_per_sample {
            *report.captions_per_sample.entry(*k).or_default() += n;
        }
        report.shards.push(r);
    }
    report.caption_chars = Distribution::of(chars);
    report.image_width = Distribution::of(widths);
    report.image_height = Distribution::of(heights);
    report
}

fn examine(s: &RawSample, keys: &SampleKeys, max_pixels: u64) -> Finding {
    let exts = s.members.iter().map(|(e, _)| e.clone()).collect();
    let result = (|| {
        // Usable as training reads it: its first caption, or any when it draws one.
        let all = captions_of(s, keys);
        let caption = match keys.draw {
            CaptionDraw::First => caption_of(s, keys)?,
            _ => all.clone()?.swap_remove(0),
        };
        let count = all.map_or(1, |a| a.len());
        let (w, h, _) = decode_rgb8(image_of(s, keys)?, max_pixels)?;
        Ok((
            caption.chars().count(),
            caption.split_whitespace().count(),
            count,
            w,
            h,
        ))
    })();
    Finding { exts, result }
}

impl std::fmt::Display for InspectReport {
    /// A human-readable summary: totals, then one line per shard.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} shard(s), {} samples, {} usable, skipped: {}",
            self.shards_total, self.samples, self.samples_ok, self.skipped
        )?;
        let keys: Vec<String> = self.keys.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        writeln!(f, "members: {}", keys.join(", "))?;
        let d = |x: &Distribution| {
            format!(
                "min {:.0} / median {:.0} / p95 {:.0} / max {:.0}",
                x.min, x.p50, x.p95, x.max
            )
        };
        writeln!(f, "caption chars: {}", d(&self.caption_chars))?;
        let counts: Vec<String> = self
            .captions_per_sample
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        writeln!(f, "captions per sample: {}", counts.join(", "))?;
        writeln!(f, "image width:   {}", d(&self.image_width))?;
        writeln!(f, "image height:  {}", d(&self.image_height))?;
        for s in &self.shards {
            write!(
                f,
                "  {}: {} samples, {} usable",
                s.shard, s.samples, s.samples_ok
            )?;
            if s.skipped.total() > 0 {
                write!(f, ", skipped: {}", s.skipped)?;
            }
            if let Some(e) = &s.error {
                write!(f, " — {e}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

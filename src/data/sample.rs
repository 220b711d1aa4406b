//! What a sample's members mean: which hold the image, the caption(s) and the label, and how
//! each is read out of a [`RawSample`] (or why the sample is unusable). Shared by the loader,
//! `data inspect` and tokenizer training, so every reader agrees on what a usable sample is.
use super::stream::ShardStream;
use super::stream::mix;
use super::tarstream::RawSample;
use super::{DataError, SkipReason};

/// Which members of a sample hold the image, caption and label.
#[derive(Debug, Clone)]
pub struct SampleKeys {
    /// Tried in order; the first present is the image.
    pub image: Vec<String>,
    pub text: String,
    /// When set, the caption is this field of the `json` member.
    pub json_caption_field: Option<String>,
    /// Read an integer `.cls` label (evaluation sets); the caption then becomes optional.
    pub label: bool,
    /// Also collect every caption of a sample (retrieval sets): the text member, numbered ones
    /// (`KEY.0.txt`, `KEY.1.txt`, ...), or a JSON list in `json_caption_field`.
    pub all_captions: bool,
    /// Read only the image (embedding an image collection): captions and labels are not looked
    /// at, so a sample without them is still usable.
    pub image_only: bool,
    /// Which caption training reads from a sample with several.
    pub draw: CaptionDraw,
}

/// How the caption of a training sample is chosen (`data.caption_choice`,
/// `data.caption_fields`).
#[derive(Debug, Clone, PartialEq)]
pub enum CaptionDraw {
    /// The text member, or `json_caption_field`.
    First,
    /// Uniformly among all its captions (the text member and numbered ones, or a JSON list).
    Random,
    /// A JSON field drawn by these probabilities, among the fields the sample has.
    Fields(Vec<(String, f64)>),
    /// Built from the sample's `.cls` label (`data.classnames`): a template drawn per sample
    /// with the class name in it (FLYP's recipe).
    Classes(ClassCaptions),
}

/// Captions of class-labelled training data: class names (line i = label i) and templates
/// with `{}` where the name goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassCaptions {
    pub names: std::sync::Arc<Vec<String>>,
    pub templates: std::sync::Arc<Vec<String>>,
}

impl ClassCaptions {
    /// The caption of a sample labelled `label` at stream position `index`: a template drawn
    /// from (`seed`, `index`), so each epoch pairs the image with another prompt. A label
    /// without a class name is a bad label (the sample is skipped and counted).
    pub fn caption(&self, label: i64, seed: u64, index: u64) -> Result<String, SkipReason> {
        let name = usize::try_from(label)
            .ok()
            .and_then(|l| self.names.get(l))
            .ok_or(SkipReason::BadLabel)?;
        let u = (mix(seed, 0xF1_1F00, index) >> 11) as f64 / (1u64 << 53) as f64;
        let n = self.templates.len();
        let t = &self.templates[((u * n as f64) as usize).min(n - 1)];
        Ok(t.replace("{}", name))
    }
}

impl SampleKeys {
    /// From `data.image_keys` (`;`-separated), `data.text_key`, `data.json_caption_field`.
    pub fn from_config(d: &crate::config::DataConfig) -> Self {
        Self {
            image: d
                .image_keys
                .split(';')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            text: d.text_key.trim().to_ascii_lowercase(),
            json_caption_field: Some(d.json_caption_field.clone()).filter(|f| !f.is_empty()),
            label: false,
            all_captions: false,
            image_only: false,
            draw: match (&d.caption_fields, d.caption_choice) {
                (f, _) if !f.is_empty() => {
                    CaptionDraw::Fields(f.iter().map(|(k, w)| (k.clone(), *w)).collect())
                }
                (_, crate::config::CaptionChoice::Random) => CaptionDraw::Random,
                (_, crate::config::CaptionChoice::First) => CaptionDraw::First,
            },
        }
    }
}

/// The sample's caption, trimmed: from the text member, or a field of the `json` member.
pub(crate) fn caption_of(raw: &RawSample, keys: &SampleKeys) -> Result<String, SkipReason> {
    let caption = match &keys.json_caption_field {
        Some(field) => {
            let bytes = raw.member("json").ok_or(SkipReason::MissingCaption)?;
            let v: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|_| SkipReason::BadJson)?;
            v.get(field)
                .and_then(|c| c.as_str())
                .ok_or(SkipReason::BadJson)?
                .to_string()
        }
        None => {
            let bytes = raw.member(&keys.text).ok_or(SkipReason::MissingCaption)?;
            std::str::from_utf8(bytes)
                .map_err(|_| SkipReason::InvalidUtf8)?
                .to_string()
        }
    };
    let caption = caption.trim();
    if caption.is_empty() {
        return Err(SkipReason::EmptyCaption);
    }
    Ok(caption.to_string())
}

/// The caption a training step reads from the sample at stream position `index`: per
/// [`SampleKeys::draw`], the first, or one drawn from (`seed`, `index`) — so the same sample
/// gets another caption each epoch, and a resumed run the same ones.
pub(crate) fn training_caption(
    raw: &RawSample,
    keys: &SampleKeys,
    seed: u64,
    index: u64,
) -> Result<String, SkipReason> {
    let uniform =
        |salt: u64| (mix(seed, 0xCA_9710 ^ salt, index) >> 11) as f64 / (1u64 << 53) as f64;
    let pick = |all: Vec<String>, u: f64| {
        let i = ((u * all.len() as f64) as usize).min(all.len() - 1);
        all.into_iter().nth(i).expect("non-empty")
    };
    match &keys.draw {
        CaptionDraw::Classes(c) => c.caption(label_of(raw)?, seed, index),
        CaptionDraw::First => caption_of(raw, keys),
        CaptionDraw::Random => Ok(pick(captions_of(raw, keys)?, uniform(0))),
        CaptionDraw::Fields(fields) => {
            let json = json_member(raw)?;
            let present: Vec<(Vec<String>, f64)> = fields
                .iter()
                .filter_map(|(f, w)| field_captions(&json, f).ok().map(|c| (c, *w)))
                .filter(|(c, _)| !c.is_empty())
                .collect();
            let total: f64 = present.iter().map(|(_, w)| w).sum();
            let mut at = uniform(1) * total;
            for (captions, w) in &present {
                if at < *w {
                    return Ok(pick(captions.clone(), uniform(2)));
                }
                at -= w;
            }
            // Rounding left `at` past the last field: it is the one drawn.
            match present.into_iter().last() {
                Some((captions, _)) => Ok(pick(captions, uniform(2))),
                None => Err(SkipReason::MissingCaption),
            }
        }
    }
}

fn json_member(raw: &RawSample) -> Result<serde_json::Value, SkipReason> {
    let bytes = raw.member("json").ok_or(SkipReason::MissingCaption)?;
    serde_json::from_slice(bytes).map_err(|_| SkipReason::BadJson)
}

/// The non-empty, trimmed captions of `field` of a sample's JSON: a string or a list of them.
fn field_captions(json: &serde_json::Value, field: &str) -> Result<Vec<String>, SkipReason> {
    let raw: Vec<&str> = match json.get(field) {
        Some(serde_json::Value::String(c)) => vec![c.as_str()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or(SkipReason::BadJson))
            .collect::<Result<_, _>>()?,
        _ => return Err(SkipReason::BadJson),
    };
    Ok(raw
        .into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect())
}

/// Every caption of a sample, trimmed, empty ones dropped: a JSON list (or string) in the
/// caption field (or in each of `data.caption_fields`), else the text member followed by
/// numbered ones (`0.txt`, `1.txt`, ...).
pub(crate) fn captions_of(raw: &RawSample, keys: &SampleKeys) -> Result<Vec<String>, SkipReason> {
    let mut all: Vec<String> = Vec::new();
    if let CaptionDraw::Fields(fields) = &keys.draw {
        let json = json_member(raw)?;
        for (f, _) in fields {
            all.extend(field_captions(&json, f).unwrap_or_default());
        }
    } else if let Some(field) = &keys.json_caption_field {
        all = field_captions(&json_member(raw)?, field)?;
    } else {
        let numbered = |ext: &str| {
            ext.strip_suffix(&keys.text)
                .and_then(|n| n.strip_suffix('.'))
                .and_then(|n| n.parse::<u32>().ok())
        };
        let mut members: Vec<(Option<u32>, &[u8])> = raw
            .members
            .iter()
            .filter_map(|(ext, bytes)| {
                if *ext == keys.text {
                    Some((None, bytes.as_slice()))
                } else {
                    numbered(ext).map(|n| (Some(n), bytes.as_slice()))
                }
            })
            .collect();
        members.sort_by_key(|(n, _)| *n);
        for (_, bytes) in members {
            all.push(
                std::str::from_utf8(bytes)
                    .map_err(|_| SkipReason::InvalidUtf8)?
                    .to_string(),
            );
        }
    }
    let all: Vec<String> = all
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if all.is_empty() {
        return Err(SkipReason::MissingCaption);
    }
    Ok(all)
}

/// The bytes of the first image member present, in `keys.image` order.
pub(crate) fn image_of<'a>(raw: &'a RawSample, keys: &SampleKeys) -> Result<&'a [u8], SkipReason> {
    keys.image
        .iter()
        .find_map(|k| raw.member(k))
        .ok_or(SkipReason::MissingImage)
}

/// The integer class label of an evaluation sample (`.cls`).
pub(crate) fn label_of(raw: &RawSample) -> Result<i64, SkipReason> {
    let bytes = raw.member("cls").ok_or(SkipReason::BadLabel)?;
    let text = std::str::from_utf8(bytes).map_err(|_| SkipReason::BadLabel)?;
    text.trim().parse::<i64>().map_err(|_| SkipReason::BadLabel)
}

/// Every usable caption of `shards` (all of a sample's when it has several), read once in
/// order without decoding images (tokenizer training). Unusable captions are skipped; shard
/// problems are logged by the stream.
pub fn captions(
    shards: Vec<super::spec::Shard>,
    keys: SampleKeys,
) -> Result<impl Iterator<Item = String> + Send, DataError> {
    use super::stream::StreamOptions;
    let opts = StreamOptions::once();
    let mut stream = ShardStream::new(shards, opts)?;
    let mut pending: std::collections::VecDeque<String> = Default::default();
    Ok(std::iter::from_fn(move || {
        loop {
            if let Some(c) = pending.pop_front() {
                return Some(c);
            }
            let all = match keys.draw {
                CaptionDraw::First => {
                    |raw: &RawSample, keys: &SampleKeys| caption_of(raw, keys).map(|c| vec![c])
                }
                _ => captions_of,
            };
            match stream.next_sample() {
                Ok(Some(s)) => match all(&s.raw, &keys) {
                    Ok(c) => pending.extend(c),
                    Err(_) => continue,
                },
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!("{e}");
                    return None;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(members: &[(&str, &str)]) -> RawSample {
        RawSample {
            key: "k".into(),
            members: members
                .iter()
                .map(|(e, b)| (e.to_string(), b.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn keys(draw: CaptionDraw) -> SampleKeys {
        SampleKeys {
            draw,
            ..SampleKeys::from_config(&crate::config::DataConfig::default())
        }
    }

    /// Labelled samples get a template drawn per position with their class name in it; a label
    /// without a name, or none, makes the sample unusable.
    #[test]
    fn class_captions_come_from_the_label_and_a_drawn_template() {
        let c = ClassCaptions {
            names: std::sync::Arc::new(vec!["cat".into(), "red dog".into()]),
            templates: std::sync::Arc::new(vec!["a photo of a {}.".into(), "a {} drawing".into()]),
        };
        let k = keys(CaptionDraw::Classes(c));
        let dog = sample(&[("cls", "1"), ("txt", "ignored"), ("jpg", "")]);
        let draws: Vec<String> = (0..2000)
            .map(|i| training_caption(&dog, &k, 3, i).unwrap())
            .collect();
        let photos = draws
            .iter()
            .filter(|d| *d == "a photo of a red dog.")
            .count();
        let drawings = draws.iter().filter(|d| *d == "a red dog drawing").count();
        assert_eq!(photos + drawings, 2000);
        assert!((900..1100).contains(&photos), "{photos}");
        assert_eq!(
            training_caption(&dog, &k, 3, 17),
            training_caption(&dog, &k, 3, 17)
        );
        for bad in [
            sample(&[("cls", "2"), ("jpg", "")]),
            sample(&[("cls", "-1")]),
            sample(&[("txt", "x")]),
        ] {
            assert_eq!(training_caption(&bad, &k, 3, 0), Err(SkipReason::BadLabel));
        }
    }

    /// Numbered captions drawn uniformly and reproducibly; JSON fields by their probabilities,
    /// a missing field leaving the draw to the others.
    #[test]
    fn captions_are_drawn_from_seed_and_position() {
        let s = sample(&[("txt", "a"), ("1.txt", "b"), ("2.txt", " c "), ("jpg", "")]);
        let k = keys(CaptionDraw::Random);
        let draws: Vec<String> = (0..3000)
            .map(|i| training_caption(&s, &k, 7, i).unwrap())
            .collect();
        for c in ["a", "b", "c"] {
            let n = draws.iter().filter(|d| *d == c).count();
            assert!((850..1150).contains(&n), "{c}: {n} of 3000");
        }
        let again: Vec<String> = (0..3000)
            .map(|i| training_caption(&s, &k, 7, i).unwrap())
            .collect();
        assert_eq!(
            draws, again,
            "the same seed and positions draw the same captions"
        );
        assert_eq!(
            training_caption(&s, &keys(CaptionDraw::First), 7, 0).unwrap(),
            "a"
        );

        let fields = CaptionDraw::Fields(vec![("web".into(), 0.75), ("syn".into(), 0.25)]);
        let k = keys(fields);
        let both = sample(&[("json", r#"{"web": "w", "syn": ["s1", "s2"]}"#)]);
        let draws: Vec<String> = (0..4000)
            .map(|i| training_caption(&both, &k, 1, i).unwrap())
            .collect();
        let n = |c: &str| draws.iter().filter(|d| *d == c).count();
        assert!((2850..3150).contains(&n("w")), "{}", n("w"));
        assert!((400..600).contains(&n("s1")) && (400..600).contains(&n("s2")));
        let only_syn = sample(&[("json", r#"{"syn": "s"}"#)]);
        assert!((0..50).all(|i| training_caption(&only_syn, &k, 1, i).unwrap() == "s"));
        let none = sample(&[("json", r#"{"other": "x"}"#)]);
        assert_eq!(
            training_caption(&none, &k, 1, 0),
            Err(SkipReason::MissingCaption)
        );
        assert_eq!(captions_of(&both, &k).unwrap(), vec!["w", "s1", "s2"]);
    }
}

//! What a sample's members mean: which hold the image, the caption(s) and the label, and how
//! each is read out of a [`RawSample`] (or why the sample is unusable). Shared by the loader,
//! `data inspect` and tokenizer training, so every reader agrees on what a usable sample is.
use super::stream::ShardStream;
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

/// Every caption of a sample, trimmed, empty ones dropped: a JSON list (or string) in the
/// caption field, else the text member followed by numbered ones (`0.txt`, `1.txt`, ...).
pub(crate) fn captions_of(raw: &RawSample, keys: &SampleKeys) -> Result<Vec<String>, SkipReason> {
    let mut all: Vec<String> = Vec::new();
    if let Some(field) = &keys.json_caption_field {
        let bytes = raw.member("json").ok_or(SkipReason::MissingCaption)?;
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| SkipReason::BadJson)?;
        match v.get(field) {
            Some(serde_json::Value::String(c)) => all.push(c.clone()),
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    all.push(item.as_str().ok_or(SkipReason::BadJson)?.to_string());
                }
            }
            _ => return Err(SkipReason::BadJson),
        }
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

/// Every usable caption of `shards`, read once in order without decoding images (tokenizer
/// training). Unusable captions are skipped; shard problems are logged by the stream.
pub fn captions(
    shards: Vec<super::spec::Shard>,
    keys: SampleKeys,
) -> Result<impl Iterator<Item = String> + Send, DataError> {
    use super::stream::{Order, StreamOptions};
    let opts = StreamOptions {
        order: Order::Once,
        shuffle_buffer: 0,
        seed: 0,
        rank: 0,
        world_size: 1,
    };
    let mut stream = ShardStream::new(shards, opts)?;
    Ok(std::iter::from_fn(move || {
        loop {
            match stream.next_sample() {
                Ok(Some(s)) => match caption_of(&s.raw, &keys) {
                    Ok(c) => return Some(c),
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

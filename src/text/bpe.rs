//! Training a CLIP-style byte-level BPE on our own captions.
//!
//! The result is laid out like OpenAI's CLIP vocab, so the text tower treats it exactly like
//! CLIP's: 256 byte symbols, the same 256 with `</w>`, one id per merge in merge order, then
//! `<|startoftext|>` = `vocab_size - 2` and `<|endoftext|>` = `vocab_size - 1`. EOT being the
//! largest id matters: OpenAI/OpenCLIP pool the text features at `argmax(ids)`. The normalizer,
//! pre-tokenizer regex, `</w>` suffix and decoder are CLIP's (the same JSON
//! `scripts/make_clip_tokenizer.py` produces), and captions are cleaned with [`clean_text`]
//! first, as at encode time.

use super::{EOT, SOT, TextError, clean::clean_text};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, NormalizerWrapper, OffsetReferential, OffsetType,
    PreTokenizedString, PreTokenizer, PreTokenizerWrapper, Tokenizer, Trainer,
};

/// CLIP's pre-tokenizer regex (what `CLIPTokenizer` writes into tokenizer.json).
pub(super) const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const SUFFIX: &str = "</w>";
/// Byte symbols with and without `</w>`: the ids every CLIP vocab starts with.
const BASE_IDS: usize = 512;

/// What [`train_bpe`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainedBpe {
    /// Ids in the written tokenizer; the requested size unless the captions ran out of pairs.
    pub vocab_size: usize,
    /// Merges kept (`vocab_size - 514` when the data allows).
    pub merges: usize,
    /// Captions read.
    pub captions: usize,
}

/// Trains a byte-level BPE with `vocab_size` ids on `captions` and writes its `tokenizer.json`
/// to `out`. Deterministic: the same captions give the same file.
///
/// The iterator is consumed once, by several threads (hence `Send`); it can stream captions
/// from files or shards without holding them all in memory. Only unique words are kept.
pub fn train_bpe<I>(captions: I, vocab_size: usize, out: &Path) -> Result<TrainedBpe, TextError>
where
    I: Iterator<Item = String> + Send,
{
    if vocab_size < BASE_IDS + 2 {
        return Err(TextError::VocabSize(vocab_size));
    }
    let normalizer: NormalizerWrapper = from_json(normalizer_json())?;
    let pre_tokenizer: PreTokenizerWrapper = from_json(pre_tokenizer_json())?;
    let symbols = byte_symbols();

    // The `</w>` forms go in as the trainer's "special tokens": that gives them fixed ids up
    // front (the trainer would otherwise number them in hash-map order, and ties between equally
    // frequent pairs are broken by id, so training would not be deterministic) and makes the
    // trainer's starting vocab exactly our 514 base ids, so `vocab_size` yields the merges we keep.
    let mut specials = vec![AddedToken::from(SOT, true), AddedToken::from(EOT, true)];
    specials.extend(
        symbols
            .iter()
            .map(|c| AddedToken::from(format!("{c}{SUFFIX}"), true)),
    );
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(symbols.iter().copied().collect::<HashSet<char>>())
        .end_of_word_suffix(SUFFIX.to_owned())
        .build();

    let mut count = 0usize;
    trainer
        .feed(captions.inspect(|_| count += 1), |caption| {
            words(&normalizer, &pre_tokenizer, caption)
        })
        .map_err(TextError::Train)?;
    let mut model = BPE::default();
    trainer.train(&mut model).map_err(TextError::Train)?;

    let trained = serde_json::to_value(&model).map_err(|e| TextError::Build(e.to_string()))?;
    let merges = trained_merges(&trained)?;
    let (vocab, merges) = clip_layout(&symbols, merges, vocab_size);

    let tokenizer_json = tokenizer_json(&vocab, &merges);
    let tokenizer: Tokenizer = tokenizer_json
        .to_string()
        .parse()
        .map_err(|e: tokenizers::Error| TextError::Build(e.to_string()))?;
    tokenizer
        .save(out, true)
        .map_err(|source| TextError::Save {
            path: out.to_path_buf(),
            source,
        })?;
    Ok(TrainedBpe {
        vocab_size: vocab.len(),
        merges: merges.len(),
        captions: count,
    })
}

/// Cleans, normalizes and pre-tokenizes one caption into the byte-level words BPE counts.
fn words(
    normalizer: &NormalizerWrapper,
    pre_tokenizer: &PreTokenizerWrapper,
    caption: &str,
) -> tokenizers::Result<Vec<String>> {
    let mut normalized = NormalizedString::from(clean_text(caption));
    normalizer.normalize(&mut normalized)?;
    let mut pre = PreTokenizedString::from(normalized);
    pre_tokenizer.pre_tokenize(&mut pre)?;
    Ok(pre
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(word, _, _)| word.to_owned())
        .collect())
}

/// Merges in rank order from the trainer's serialized model (pairs, or "a b" strings).
fn trained_merges(model: &Value) -> Result<Vec<(String, String)>, TextError> {
    let bad = || TextError::Build("trained BPE model has no readable merges".into());
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(bad)?;
    list.iter()
        .map(|m| match m {
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok((a.to_owned(), b.to_owned())),
                _ => Err(bad()),
            },
            Value::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect()
}

/// CLIP's id layout: bytes, bytes + `</w>`, merge results in merge order (at most
/// `vocab_size - 514`; a merge whose result already exists adds no id), SOT, EOT.
fn clip_layout(
    symbols: &[char],
    merges: Vec<(String, String)>,
    vocab_size: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut vocab: Vec<String> = symbols.iter().map(char::to_string).collect();
    vocab.extend(symbols.iter().map(|c| format!("{c}{SUFFIX}")));
    let mut seen: HashSet<String> = vocab.iter().cloned().collect();
    let mut kept = Vec::new();
    for (a, b) in merges {
        let merged = format!("{a}{b}");
        if !seen.contains(&merged) {
            if vocab.len() >= vocab_size - 2 {
                break;
            }
            seen.insert(merged.clone());
            vocab.push(merged);
        }
        kept.push((a, b));
    }
    vocab.push(SOT.to_owned());
    vocab.push(EOT.to_owned());
    (vocab, kept)
}

/// The 256 byte symbols in CLIP's `bytes_to_unicode` order: printable Latin-1 bytes map to
/// themselves, the rest to U+0100 onwards.
pub(crate) fn byte_symbols() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut symbols: Vec<char> = (0..256u32)
        .filter(|&b| printable(b))
        .filter_map(char::from_u32)
        .collect();
    symbols.extend(
        (0..256u32)
            .filter(|&b| !printable(b))
            .enumerate()
            .filter_map(|(n, _)| char::from_u32(256 + n as u32)),
    );
    symbols
}

fn normalizer_json() -> Value {
    json!({"type": "Sequence", "normalizers": [
        {"type": "NFC"},
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        {"type": "Lowercase"}
    ]})
}

fn pre_tokenizer_json() -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
    ]})
}

/// The whole tokenizer.json, in the shape `CLIPTokenizer` writes (SOT/EOT added by a Roberta
/// post-processor for Hugging Face readers; cliptrain places them itself).
fn tokenizer_json(vocab: &[String], merges: &[(String, String)]) -> Value {
    let ids: HashMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let (sot, eot) = (vocab.len() - 2, vocab.len() - 1);
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(sot, SOT), special(eot, EOT)],
        "normalizer": normalizer_json(),
        "pre_tokenizer": pre_tokenizer_json(),
        "post_processor": {"type": "RobertaProcessing", "sep": [EOT, eot], "cls": [SOT, sot],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOT,
                  "continuing_subword_prefix": "", "end_of_word_suffix": SUFFIX,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": ids, "merges": merges}
    })
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, TextError> {
    serde_json::from_value(value).map_err(|e| TextError::Build(e.to_string()))
}

//! The tokenizer as other libraries read an export: which transformers class reproduces
//! cliptrain's rows, and a `tokenizer.json` that lays captions out as cliptrain does.
//!
//! transformers' `CLIPTokenizer` does not read the file's pipeline: it rebuilds CLIP's own
//! (byte-level BPE with `</w>`, CLIP's split regex, NFC + lower case) from the vocab and merges.
//! Claimed for a WordLevel or Unigram file whose specials merely have CLIP's names, it turns
//! every word into the unknown token. Any other tokenizer is therefore exported for
//! `PreTrainedTokenizerFast`, which runs the file as written; cliptrain ignores the file's
//! post-processor, padding and truncation and cleans captions first, so the written file
//! states those: cliptrain's row layout as its post-processor, the cleaning as normalizer steps.
use super::bpe::CLIP_PATTERN;
use super::{EOT, SOT, TextClean, TextError, TextTokenizer};
use serde_json::{Value, json};
use tokenizers::{NormalizerWrapper, PostProcessorWrapper, Tokenizer};

impl TextTokenizer {
    /// Whether this is CLIP's BPE as transformers' `CLIPTokenizer` rebuilds it: a BPE model
    /// with the `</w>` suffix, CLIP's pre-tokenizer, CLIP's cleaning and OpenAI's specials.
    /// The specials' names alone decide nothing.
    pub fn is_clip_bpe(&self) -> bool {
        let specials = self.specials();
        let name = |id: u32| self.inner().id_to_token(id);
        let model = serde_json::to_value(self.inner().get_model()).unwrap_or_default();
        let pre = serde_json::to_value(self.inner().get_pre_tokenizer()).unwrap_or_default();
        model["type"] == "BPE"
            && model["end_of_word_suffix"] == "</w>"
            && model["continuing_subword_prefix"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            && is_clip_pre_tokenizer(&pre)
            && specials.clean == TextClean::Clip
            && specials.sot.and_then(name).as_deref() == Some(SOT)
            && name(specials.eot).as_deref() == Some(EOT)
    }

    /// The `tokenizer_class` an export states: `CLIPTokenizer` for [`Self::is_clip_bpe`], else
    /// `PreTrainedTokenizerFast`.
    pub fn hf_class(&self) -> &'static str {
        match self.is_clip_bpe() {
            true => "CLIPTokenizer",
            false => "PreTrainedTokenizerFast",
        }
    }

    /// Whether the cleaning lower-cases captions.
    pub fn lowercases(&self) -> bool {
        matches!(
            self.specials().clean,
            TextClean::Clip | TextClean::Canonicalize | TextClean::Siglip
        )
    }

    /// The tokenizer an export writes. CLIP's BPE as loaded (`CLIPTokenizer` rebuilds its
    /// pipeline anyway). Any other: the cleaning that Hugging Face tokenizers can express
    /// (NFC, whitespace collapsed and stripped, lower case; for `canonicalize` also `_` as a space
    /// and ASCII punctuation removed) before the file's own normalizer, cliptrain's
    /// `[SOT] tokens EOT` as the post-processor, and no padding or truncation of its own (the
    /// reader's `max_length`/`padding` decide, as `open_clip`'s `HFTokenizer` sets them).
    /// ftfy-style fixes and HTML unescaping have no such step: open_clip applies them itself
    /// (the export states `tokenizer_kwargs.clean`), a bare `AutoTokenizer` does not.
    pub fn for_export(&self) -> Result<Tokenizer, TextError> {
        let mut out = self.inner().clone();
        if self.is_clip_bpe() {
            return Ok(out);
        }
        let build = |e: serde_json::Error| TextError::Build(e.to_string());
        let mut steps = clean_steps(self.specials().clean);
        if let Some(own) = out.get_normalizer() {
            steps.push(serde_json::to_value(own).map_err(build)?);
        }
        let normalizer: NormalizerWrapper =
            serde_json::from_value(json!({"type": "Sequence", "normalizers": steps}))
                .map_err(build)?;
        let post: PostProcessorWrapper =
            serde_json::from_value(self.row_template()).map_err(build)?;
        let set = |e: tokenizers::Error| TextError::Build(e.to_string());
        out.with_normalizer(Some(normalizer)).map_err(set)?;
        out.with_post_processor(Some(post))
            .with_padding(None)
            .with_truncation(None)
            .map_err(set)?;
        Ok(out)
    }

    /// A `TemplateProcessing` that puts SOT (when rows have one) before and EOT after a caption.
    fn row_template(&self) -> Value {
        let specials = self.specials();
        let name = |id: u32| self.inner().id_to_token(id).unwrap_or_default();
        let mut around = Vec::new();
        if let Some(sot) = specials.sot {
            around.push((name(sot), sot));
        }
        let eot = (name(specials.eot), specials.eot);
        let piece = |n: &str| json!({"SpecialToken": {"id": n, "type_id": 0}});
        let seq = |s: &str, t: u32| json!({"Sequence": {"id": s, "type_id": t}});
        let mut single: Vec<Value> = around.iter().map(|(n, _)| piece(n.as_str())).collect();
        single.extend([seq("A", 0), piece(eot.0.as_str())]);
        let mut pair = single.clone();
        pair.extend([seq("B", 1), piece(eot.0.as_str())]);
        around.push(eot);
        let special_tokens: serde_json::Map<String, Value> = around
            .iter()
            .map(|(n, id)| (n.clone(), json!({"id": n, "ids": [id], "tokens": [n]})))
            .collect();
        json!({"type": "TemplateProcessing", "single": single, "pair": pair,
               "special_tokens": special_tokens})
    }
}

/// CLIP's pre-tokenizer: its split regex, then byte-level without a prefix space.
fn is_clip_pre_tokenizer(pre: &Value) -> bool {
    let Some([split, bytes]) = pre["pretokenizers"].as_array().map(Vec::as_slice) else {
        return false;
    };
    pre["type"] == "Sequence"
        && split["type"] == "Split"
        && split["pattern"]["Regex"] == CLIP_PATTERN
        && bytes["type"] == "ByteLevel"
        && bytes["add_prefix_space"] == false
}

/// Normalizer steps for what `clean` does that Hugging Face normalizers can express.
fn clean_steps(clean: TextClean) -> Vec<Value> {
    let replace = |pattern: &str, content: &str| json!({"type": "Replace", "pattern": {"Regex": pattern}, "content": content});
    let spaces = [
        replace(r"\s+", " "),
        json!({"type": "Strip", "strip_left": true, "strip_right": true}),
    ];
    if matches!(clean, TextClean::Siglip | TextClean::SiglipCased) {
        // SigLIP's own cleaning has no NFC; its SentencePiece map normalizes after it.
        let mut steps = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            replace(r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"##, ""),
        ];
        if clean == TextClean::Siglip {
            steps.push(json!({"type": "Lowercase"}));
        }
        // Python's `\s` also takes U+001C–001F, Oniguruma's does not.
        steps.extend([
            replace(r"[\s\x{1c}-\x{1f}]+", " "),
            json!({"type": "Strip", "strip_left": true, "strip_right": true}),
        ]);
        return steps;
    }
    let mut steps = vec![json!({"type": "NFC"})];
    if clean == TextClean::Canonicalize {
        // Python's string.punctuation, as open_clip's canonicalize_text removes it.
        steps.extend([
            replace("_", " "),
            replace(r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^`{|}~]"##, ""),
        ]);
    }
    steps.extend(spaces);
    if matches!(
        clean,
        TextClean::Clip | TextClean::Auto | TextClean::Canonicalize
    ) {
        steps.push(json!({"type": "Lowercase"}));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{TokenizerOptions, clean_caption, train_bpe};
    use std::path::Path;
    use tokenizers::{NormalizedString, Normalizer};

    /// A WordLevel tokenizer whose specials have OpenAI CLIP's names, and no post-processor.
    fn word_level(words: &[&str]) -> TextTokenizer {
        let names = ["<unk>", SOT, EOT].into_iter().chain(words.iter().copied());
        let vocab: serde_json::Map<String, Value> = names
            .enumerate()
            .map(|(i, w)| (w.to_string(), json!(i)))
            .collect();
        let special = |id: usize, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        };
        let file = json!({"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(1, SOT), special(2, EOT)],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}});
        let tok: Tokenizer = file.to_string().parse().unwrap();
        let origin = Path::new("no-such-dir/tokenizer.json");
        TextTokenizer::new(tok, &TokenizerOptions::new(12), origin).unwrap()
    }

    #[test]
    fn only_clips_own_bpe_is_claimed_as_a_clip_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bpe.json");
        let captions = [
            "a red circle on a blue background",
            "there is a small square",
        ];
        train_bpe(captions.iter().map(|c| c.to_string()), 530, &path).unwrap();
        let bpe = TextTokenizer::from_file(&path, 12).unwrap();
        assert!(bpe.is_clip_bpe());
        assert_eq!(bpe.hf_class(), "CLIPTokenizer");
        let before = std::fs::read_to_string(&path).unwrap();
        let again = dir.path().join("again.json");
        bpe.for_export().unwrap().save(&again, true).unwrap();
        assert_eq!(std::fs::read_to_string(&again).unwrap(), before);

        let wl = word_level(&["a", "red", "circle"]);
        assert_eq!(
            wl.specials().clean,
            TextClean::Clip,
            "CLIP's names: CLIP's cleaning"
        );
        assert!(!wl.is_clip_bpe());
        assert_eq!(wl.hf_class(), "PreTrainedTokenizerFast");
        assert!(wl.lowercases());
    }

    #[test]
    fn the_exported_file_gives_our_rows_with_its_own_specials() {
        let wl = word_level(&["a", "red", "circle", "on", "the", "left", "."]);
        let exported = wl.for_export().unwrap();
        let n = wl.context_length();
        for caption in [
            "A  Red circle.",
            "a BLUE circle on the left",
            "",
            &"red ".repeat(20),
        ] {
            let ours = wl.encode_batch(&[caption]).unwrap();
            let mut theirs: Vec<i64> = exported
                .encode(caption, true)
                .unwrap()
                .get_ids()
                .iter()
                .map(|&i| i64::from(i))
                .collect();
            // The reader truncates to max_length keeping the specials, and pads with the pad.
            if theirs.len() > n {
                theirs.drain(n - 1..theirs.len() - 1);
            }
            theirs.resize(n, i64::from(wl.pad_id()));
            assert_eq!(theirs, ours, "{caption:?}");
        }
    }

    #[test]
    fn canonicalize_steps_clean_as_open_clip_does() {
        let steps = clean_steps(TextClean::Canonicalize);
        let normalizer: NormalizerWrapper =
            serde_json::from_value(json!({"type": "Sequence", "normalizers": steps})).unwrap();
        for text in ["A_b, \"C\"!  d", "  Hello,   World. ", "x-ray (1/2)"] {
            let mut n = NormalizedString::from(text);
            normalizer.normalize(&mut n).unwrap();
            assert_eq!(
                n.get(),
                clean_caption(text, TextClean::Canonicalize),
                "{text:?}"
            );
        }
    }
}

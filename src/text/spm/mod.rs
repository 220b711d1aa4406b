//! SentencePiece model files (`spiece.model` of SigLIP and T5, `sentencepiece.bpe.model`,
//! `tokenizer.model`), read without the sentencepiece library and turned into a Hugging Face
//! [`Tokenizer`] that encodes as `SentencePieceProcessor.encode` does.
//!
//! The file is a protobuf `ModelProto`; the few fields that decide the ids are read here with a
//! bounded wire-format reader (pieces, their scores and types; the trainer's model type, unk
//! and eos ids and byte fallback; the normalizer's character map and whitespace rules). The
//! conversion follows SentencePiece's own order, as transformers' `SpmConverter` does: the
//! precompiled character map, extra spaces removed, spaces escaped as `▁`, the dummy prefix;
//! user-defined pieces kept whole; Unigram pieces with their scores, or BPE merges ranked by
//! the merged piece's score. Control and unknown pieces become special added tokens, and the
//! end piece is appended by the post-processor, as SigLIP's and T5's tokenizers append it.
//!
//! Nothing is trusted: the file size is capped before it is read, every length is checked
//! against what is left, and the character map's double-array trie is walked once here so
//! that encoding can never index outside it (the library that runs it does not check).

mod charsmap;
mod wire;

use super::TextError;
use charsmap::check_charsmap;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tokenizers::normalizers::{Precompiled, Replace, Sequence, replace::ReplacePattern};
use tokenizers::{NormalizerWrapper, Tokenizer};
use wire::{Field, Wire};

/// File names a SentencePiece model goes by in model folders, in the order they are looked for.
pub const SPM_FILES: [&str; 3] = ["spiece.model", "sentencepiece.bpe.model", "tokenizer.model"];

/// The largest model file read (Gemma's 256k-piece model is 4 MB).
const MAX_FILE: u64 = 64 << 20;
/// The largest character map checked (SentencePiece's `nmt_nfkc_cf` is 240 KB): its trie walk
/// costs 255 steps per node.
pub(super) const MAX_CHARSMAP: usize = 4 << 20;

/// Whether `path` names a SentencePiece model rather than a `tokenizer.json`.
pub fn is_sentencepiece(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "model")
}

/// The first SentencePiece model file of [`SPM_FILES`] in `dir`.
pub fn find_in(dir: &Path) -> Option<std::path::PathBuf> {
    SPM_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Reads the SentencePiece model at `path` into a tokenizer.
pub fn load(path: &Path) -> Result<Tokenizer, TextError> {
    let bad = |reason: String| TextError::SentencePiece {
        path: path.to_path_buf(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .len();
    if len > MAX_FILE {
        return Err(bad(format!(
            "is {len} bytes; a SentencePiece model is at most {MAX_FILE} bytes here"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let model = ModelProto::parse(&bytes).map_err(bad)?;
    model.to_tokenizer().map_err(bad)
}

/// The `tokenizer.json` text a tokenizer file stands for: a `tokenizer.json` as it is, a
/// SentencePiece model converted. Checkpoints store this, and a resume compares with it.
pub fn tokenizer_json_bytes(path: &Path) -> Result<Vec<u8>, TextError> {
    if !is_sentencepiece(path) {
        return std::fs::read(path).map_err(|source| TextError::Read {
            path: path.to_path_buf(),
            source,
        });
    }
    let tok = load(path)?;
    tok.to_string(true)
        .map(String::into_bytes)
        .map_err(|e| TextError::Build(e.to_string()))
}

/// What a piece is to SentencePiece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

#[derive(Debug)]
struct Piece {
    text: String,
    score: f32,
    kind: PieceType,
}

/// `ModelProto`: the fields the ids depend on, with protobuf's defaults.
#[derive(Debug)]
struct ModelProto {
    pieces: Vec<Piece>,
    /// `TrainerSpec.model_type`: 1 Unigram, 2 BPE, 3 word, 4 char.
    model_type: u64,
    byte_fallback: bool,
    unk_id: i64,
    eos_id: i64,
    charsmap: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl ModelProto {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut m = Self {
            pieces: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            unk_id: 0,
            eos_id: 2,
            charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut wire = Wire::new(bytes);
        while let Some((field, value)) = wire.next()? {
            match (field, value) {
                (1, Field::Bytes(b)) => m.pieces.push(parse_piece(b, m.pieces.len())?),
                (2, Field::Bytes(b)) => m.trainer_spec(b)?,
                (3, Field::Bytes(b)) => m.normalizer_spec(b)?,
                (1..=3, _) => {
                    return Err(format!(
                        "field {field} of ModelProto has the wrong wire type: not a SentencePiece model"
                    ));
                }
                _ => {}
            }
        }
        Ok(m)
    }

    fn trainer_spec(&mut self, b: &[u8]) -> Result<(), String> {
        let mut wire = Wire::new(b);
        while let Some((field, value)) = wire.next()? {
            match (field, value) {
                (3, Field::Varint(v)) => self.model_type = v,
                (35, Field::Varint(v)) => self.byte_fallback = v != 0,
                // int32 fields: a negative value is the 64-bit two's complement.
                (40, Field::Varint(v)) => self.unk_id = i64::from(v as i32),
                (42, Field::Varint(v)) => self.eos_id = i64::from(v as i32),
                _ => {}
            }
        }
        Ok(())
    }

    fn normalizer_spec(&mut self, b: &[u8]) -> Result<(), String> {
        let mut wire = Wire::new(b);
        while let Some((field, value)) = wire.next()? {
            match (field, value) {
                (2, Field::Bytes(map)) => self.charsmap = map.to_vec(),
                (3, Field::Varint(v)) => self.add_dummy_prefix = v != 0,
                (4, Field::Varint(v)) => self.remove_extra_whitespaces = v != 0,
                (5, Field::Varint(v)) => self.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks the pieces and ids, then builds the tokenizer.
    fn to_tokenizer(&self) -> Result<Tokenizer, String> {
        if self.pieces.is_empty() {
            return Err("has no pieces: not a SentencePiece model".into());
        }
        let n = self.pieces.len();
        let mut seen = HashSet::with_capacity(n);
        for (id, p) in self.pieces.iter().enumerate() {
            if !seen.insert(p.text.as_str()) {
                return Err(format!("piece {id} {:?} appears twice", p.text));
            }
        }
        let unk = usize::try_from(self.unk_id)
            .ok()
            .filter(|&id| id < n && self.pieces[id].kind == PieceType::Unknown)
            .ok_or_else(|| {
                format!(
                    "trainer_spec.unk_id = {} is not the id of an unknown piece among its {n} pieces",
                    self.unk_id
                )
            })?;
        let model = match self.model_type {
            1 => self.unigram(unk),
            2 => self.bpe(unk),
            t => {
                return Err(format!(
                    "trainer_spec.model_type = {t} ({}): cliptrain reads Unigram and BPE models",
                    if t == 3 {
                        "word"
                    } else if t == 4 {
                        "char"
                    } else {
                        "unknown"
                    }
                ));
            }
        };
        let eos = usize::try_from(self.eos_id)
            .ok()
            .filter(|&id| id < n && self.pieces[id].kind == PieceType::Control)
            .map(|id| (self.pieces[id].text.as_str(), id));
        let file = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens(),
            "normalizer": null,
            "pre_tokenizer": self.pre_tokenizer(),
            "post_processor": eos.map(end_template),
            "decoder": self.decoder(),
            "model": model,
        });
        let mut tok: Tokenizer = file
            .to_string()
            .parse()
            .map_err(|e| format!("cannot build its tokenizer: {e}"))?;
        if let Some(normalizer) = self.normalizer()? {
            tok.with_normalizer(Some(normalizer))
                .map_err(|e| format!("cannot build its normalizer: {e}"))?;
        }
        Ok(tok)
    }

    fn unigram(&self, unk: usize) -> Value {
        let vocab: Vec<Value> = self
            .pieces
            .iter()
            .map(|p| json!([p.text, f64::from(p.score)]))
            .collect();
        json!({"type": "Unigram", "unk_id": unk, "vocab": vocab,
               "byte_fallback": self.byte_fallback})
    }

    /// SentencePiece's BPE applies the merge whose result scores highest; as a ranked merge
    /// list: every split of a normal piece into two normal pieces, by the piece's score, then id.
    fn bpe(&self, unk: usize) -> Value {
        let normal: HashMap<&str, (f32, usize)> = self
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PieceType::Normal)
            .map(|(id, p)| (p.text.as_str(), (p.score, id)))
            .collect();
        let mut ranked = Vec::new();
        for (&text, &(score, id)) in &normal {
            for (cut, _) in text.char_indices().skip(1) {
                let (left, right) = text.split_at(cut);
                if normal.contains_key(left) && normal.contains_key(right) {
                    ranked.push((-score, id, left, right));
                }
            }
        }
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let merges: Vec<Value> = ranked.iter().map(|m| json!([m.2, m.3])).collect();
        let vocab: serde_json::Map<String, Value> = self
            .pieces
            .iter()
            .enumerate()
            .map(|(id, p)| (p.text.clone(), json!(id)))
            .collect();
        json!({"type": "BPE", "dropout": null, "unk_token": self.pieces[unk].text,
               "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
               "byte_fallback": self.byte_fallback, "ignore_merges": self.has_user_defined(),
               "vocab": vocab, "merges": merges})
    }

    fn has_user_defined(&self) -> bool {
        self.pieces.iter().any(|p| p.kind == PieceType::UserDefined)
    }

    /// Control and unknown pieces, as special tokens with their own ids.
    fn added_tokens(&self) -> Vec<Value> {
        self.pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.kind, PieceType::Control | PieceType::Unknown))
            .map(|(id, p)| {
                json!({"id": id, "content": p.text, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect()
    }

    /// SentencePiece's normalizer, in its order. Built from types, not JSON: the character
    /// map is checked first (see `charsmap::check_charsmap`).
    fn normalizer(&self) -> Result<Option<NormalizerWrapper>, String> {
        let replace =
            |pattern: ReplacePattern, content: &str| -> Result<NormalizerWrapper, String> {
                Replace::new(pattern, content)
                    .map(NormalizerWrapper::Replace)
                    .map_err(|e| format!("cannot build its normalizer: {e}"))
            };
        let regex = |r: &str| ReplacePattern::Regex(r.into());
        let mut steps = Vec::new();
        if !self.charsmap.is_empty() {
            check_charsmap(&self.charsmap)?;
            let map = Precompiled::from(&self.charsmap)
                .map_err(|e| format!("normalizer_spec.precompiled_charsmap: {e}"))?;
            steps.push(NormalizerWrapper::Precompiled(map));
        }
        if self.remove_extra_whitespaces {
            // Only spaces count: SentencePiece leaves other whitespace alone here.
            steps.push(replace(regex(r"\A +| +\z"), "")?);
            steps.push(replace(regex(" {2,}"), " ")?);
        }
        if self.escape_whitespaces {
            steps.push(replace(ReplacePattern::String(" ".into()), "▁")?);
        }
        if self.add_dummy_prefix {
            // SentencePiece prefixes `▁` even to text that starts with one; Metaspace does not.
            steps.push(replace(regex(r"\A▁"), "▁▁")?);
        }
        Ok((!steps.is_empty()).then(|| NormalizerWrapper::Sequence(Sequence::new(steps))))
    }

    /// The dummy prefix, then user-defined pieces cut out whole (SentencePiece never splits
    /// or merges them).
    fn pre_tokenizer(&self) -> Value {
        let mut steps = Vec::new();
        if self.add_dummy_prefix {
            steps.push(json!({"type": "Metaspace", "replacement": "▁",
                              "prepend_scheme": "always", "split": false}));
        }
        let mut user: Vec<&str> = self
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::UserDefined)
            .map(|p| p.text.as_str())
            .collect();
        if !user.is_empty() {
            user.sort_by_key(|p| std::cmp::Reverse(p.len()));
            let pattern = user.iter().map(|p| escape(p)).collect::<Vec<_>>().join("|");
            steps.push(json!({"type": "Split", "pattern": {"Regex": pattern},
                              "behavior": "Isolated", "invert": false}));
        }
        match steps.len() {
            0 => Value::Null,
            _ => json!({"type": "Sequence", "pretokenizers": steps}),
        }
    }

    fn decoder(&self) -> Value {
        let mut steps =
            vec![json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "})];
        if self.byte_fallback {
            steps.push(json!({"type": "ByteFallback"}));
        }
        if self.add_dummy_prefix {
            steps.push(json!({"type": "Fuse"}));
            steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        } else if self.byte_fallback {
            steps.push(json!({"type": "Fuse"}));
        }
        json!({"type": "Sequence", "decoders": steps})
    }
}

/// `$A </s>`: the end piece after every caption, as SigLIP's and T5's tokenizers add it.
fn end_template((name, id): (&str, usize)) -> Value {
    let end = json!({"SpecialToken": {"id": name, "type_id": 0}});
    let seq = |s: &str, t: u32| json!({"Sequence": {"id": s, "type_id": t}});
    json!({"type": "TemplateProcessing",
           "single": [seq("A", 0), end],
           "pair": [seq("A", 0), end, seq("B", 1), end],
           "special_tokens": {name: {"id": name, "ids": [id], "tokens": [name]}}})
}

/// A piece as an Oniguruma literal: its metacharacters escaped.
fn escape(piece: &str) -> String {
    let mut out = String::with_capacity(piece.len());
    for c in piece.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn parse_piece(b: &[u8], id: usize) -> Result<Piece, String> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut wire = Wire::new(b);
    while let Some((field, value)) = wire.next()? {
        match (field, value) {
            (1, Field::Bytes(t)) => {
                piece.text = String::from_utf8(t.to_vec())
                    .map_err(|_| format!("piece {id} is not valid UTF-8"))?;
            }
            (2, Field::Fixed32(s)) => piece.score = f32::from_bits(s),
            (3, Field::Varint(t)) => {
                piece.kind = match t {
                    1 => PieceType::Normal,
                    2 => PieceType::Unknown,
                    3 => PieceType::Control,
                    4 => PieceType::UserDefined,
                    5 => PieceType::Unused,
                    6 => PieceType::Byte,
                    t => return Err(format!("piece {id} has the unknown type {t}")),
                }
            }
            (1..=3, _) => {
                return Err(format!(
                    "field {field} of piece {id} has the wrong wire type"
                ));
            }
            _ => {}
        }
    }
    if piece.text.is_empty() {
        return Err(format!("piece {id} is empty"));
    }
    if !piece.score.is_finite() {
        return Err(format!(
            "piece {id} {:?} has the score {}",
            piece.text, piece.score
        ));
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf field: key, then the value's bytes.
    fn field(number: u64, wire: u64, body: &[u8]) -> Vec<u8> {
        let mut out = varint(number << 3 | wire);
        if wire == 2 {
            out.extend(varint(body.len() as u64));
        }
        out.extend_from_slice(body);
        out
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut body = field(1, 2, text.as_bytes());
        body.extend(field(2, 5, &score.to_le_bytes()));
        body.extend(field(3, 0, &varint(kind)));
        field(1, 2, &body)
    }

    /// `<unk> </s> ▁a ▁b b ▁ab`, Unigram, no character map, eos = 1, unk = 0.
    fn model() -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(piece("<unk>", 0.0, 2));
        m.extend(piece("</s>", 0.0, 3));
        for (p, s) in [("▁a", -1.0), ("▁b", -2.0), ("b", -3.0), ("▁ab", -1.5)] {
            m.extend(piece(p, s, 1));
        }
        let mut trainer = field(40, 0, &varint(0));
        trainer.extend(field(42, 0, &varint(1)));
        m.extend(field(2, 2, &trainer));
        m
    }

    #[test]
    fn a_hand_written_unigram_model_encodes_with_the_best_scoring_pieces() {
        let tok = ModelProto::parse(&model()).unwrap().to_tokenizer().unwrap();
        // "▁ab" (-1.5) beats "▁a" + "b" (-4); "b b" → "▁b" "▁b".
        let ids = tok.encode("ab  b", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, [5, 3, 1]);
        assert_eq!(tok.token_to_id("</s>"), Some(1));
    }

    #[test]
    fn hostile_files_are_refused_with_the_reason() {
        let refused = |bytes: &[u8], why: &str| {
            let err = ModelProto::parse(bytes)
                .and_then(|m| m.to_tokenizer().map(|_| ()))
                .unwrap_err();
            assert!(err.contains(why), "{err}");
        };
        let m = model();
        refused(&m[..m.len() - 3], "cut short");
        // A piece that says it is 2^40 bytes long.
        let mut long = varint(1 << 3 | 2);
        long.extend(varint(1 << 40));
        refused(&long, "1099511627776 bytes long");
        refused(&[0xff; 12], "longer than 10 bytes");
        refused(&field(1, 3, &[]), "wire type 3");
        refused(&[], "has no pieces");
        let mut nan = model();
        nan.extend(piece("x", f32::NAN, 1));
        refused(&nan, "has the score NaN");
        let mut twice = model();
        twice.extend(piece("▁a", -1.0, 1));
        refused(&twice, "piece 6 \"▁a\" appears twice");
        let mut bad_unk = model();
        bad_unk.extend(field(2, 2, &field(40, 0, &varint(u64::MAX))));
        refused(&bad_unk, "unk_id = -1 is not the id of an unknown piece");
        let mut word = model();
        word.extend(field(2, 2, &field(3, 0, &varint(3))));
        refused(&word, "model_type = 3 (word)");
    }

    #[test]
    fn a_character_map_that_points_outside_itself_is_refused() {
        let with_map = |map: &[u8]| {
            let mut m = model();
            m.extend(field(3, 2, &field(2, 2, map)));
            ModelProto::parse(&m).unwrap().to_tokenizer().map(|_| ())
        };
        let err = with_map(&[0xff, 0xff, 0xff, 0x7f, 0, 0]).unwrap_err();
        assert!(err.contains("says its trie is"), "{err}");
        // One unit whose offset sends the first byte's lookup far outside the array.
        let mut map = 4u32.to_le_bytes().to_vec();
        map.extend((0xFFFFu32 << 10).to_le_bytes());
        let err = with_map(&map).unwrap_err();
        assert!(err.contains("points outside itself"), "{err}");
    }
}

//! Unit tests of the tokenizer and BPE training on a small tokenizer trained in the test.
use super::bpe::byte_symbols;
use super::{EOT, SOT, TextError, TextTokenizer, clean_text, train_bpe};
use std::collections::HashMap;
use std::path::Path;

const VOCAB: usize = 600;

fn training_captions() -> Vec<String> {
    let subjects = ["a dog", "two cats", "the old man", "a red car", "children"];
    let verbs = [
        "running on",
        "sitting near",
        "looking at",
        "parked by",
        "playing in",
    ];
    let places = [
        "the beach",
        "a garden",
        "the city street",
        "snowy mountains",
        "a café",
    ];
    let moods = ["Beautiful", "colorful", "wooden", "SUNNY", "quiet"];
    let mut out = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        for (j, v) in verbs.iter().enumerate() {
            for (k, p) in places.iter().enumerate() {
                let m = moods[(i + j + k) % moods.len()];
                out.push(format!(
                    "{s} {v} {p}, {m} photo #{}! It's nice.",
                    i * 25 + j * 5 + k
                ));
            }
        }
    }
    out
}

fn train(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let trained = train_bpe(training_captions().into_iter(), VOCAB, &path).unwrap();
    assert_eq!(trained.vocab_size, VOCAB);
    assert_eq!(trained.merges, VOCAB - 514);
    assert_eq!(trained.captions, 125);
    path
}

fn tokenizer(context_length: usize) -> (tempfile::TempDir, TextTokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let path = train(dir.path(), "tokenizer.json");
    let tok = TextTokenizer::from_file(&path, context_length).unwrap();
    (dir, tok)
}

#[test]
fn trained_vocab_has_clip_layout_with_specials_on_top() {
    let (_dir, tok) = tokenizer(16);
    assert_eq!(tok.vocab_size(), VOCAB);
    assert_eq!(tok.sot_id(), Some(VOCAB as u32 - 2));
    assert_eq!(tok.eot_id() as usize, VOCAB - 1);
    let inner = tok.inner();
    let symbols = byte_symbols();
    assert_eq!(inner.token_to_id("!"), Some(0));
    assert_eq!(inner.token_to_id(&symbols[255].to_string()), Some(255));
    assert_eq!(inner.token_to_id("!</w>"), Some(256));
    assert_eq!(inner.token_to_id(SOT), tok.sot_id());
    assert_eq!(inner.token_to_id(EOT), Some(tok.eot_id()));
}

#[test]
fn training_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::fs::read(train(dir.path(), "a.json")).unwrap();
    let b = std::fs::read(train(dir.path(), "b.json")).unwrap();
    assert!(
        a == b,
        "two trainings on the same captions wrote different files"
    );
}

#[test]
fn training_captions_round_trip_without_unknown_tokens() {
    let (_dir, tok) = tokenizer(77);
    let byte_of: HashMap<char, u8> = byte_symbols()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i as u8))
        .collect();
    // Bytes in `byte_symbols` order are not byte values; rebuild the value map.
    let values: Vec<u8> = printable_first_byte_order();
    for caption in training_captions() {
        let ids = tok.encode_tokens(&caption).unwrap();
        let mut bytes = Vec::new();
        for &id in &ids {
            assert!(
                (id as usize) < VOCAB - 2,
                "{caption:?} encodes to special id {id}"
            );
            let token = tok.inner().id_to_token(id).unwrap();
            for c in token.trim_end_matches("</w>").chars() {
                bytes.push(values[byte_of[&c] as usize]);
            }
        }
        let expected: String = clean_text(&caption).split_whitespace().collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }
}

/// Byte values in CLIP's `bytes_to_unicode` order (the order of `byte_symbols`).
fn printable_first_byte_order() -> Vec<u8> {
    let printable = |b: u8| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut order: Vec<u8> = (0..=255u8).filter(|&b| printable(b)).collect();
    order.extend((0..=255u8).filter(|&b| !printable(b)));
    order
}

#[test]
fn rows_are_fixed_length_sot_first_and_zero_padded() {
    let (_dir, tok) = tokenizer(16);
    let ids = tok
        .encode_batch(&["a dog", "two cats playing", "a red car"])
        .unwrap();
    assert_eq!(ids.len(), 3 * 16);
    for row in ids.chunks(16) {
        assert_eq!(row[0], i64::from(tok.sot_id().unwrap()));
        let eot = row
            .iter()
            .position(|&id| id == i64::from(tok.eot_id()))
            .unwrap();
        assert!(eot >= 2);
        assert!(row[eot + 1..].iter().all(|&id| id == 0));
        assert!(
            row[1..eot]
                .iter()
                .all(|&id| id > 0 && id < VOCAB as i64 - 2)
        );
    }
}

#[test]
fn empty_and_blank_captions_are_sot_eot() {
    let (_dir, tok) = tokenizer(8);
    let (sot, eot) = (i64::from(tok.sot_id().unwrap()), i64::from(tok.eot_id()));
    let ids = tok.encode_batch(&["", " \t\u{a0}\n"]).unwrap();
    for row in ids.chunks(8) {
        assert_eq!(row, [sot, eot, 0, 0, 0, 0, 0, 0]);
    }
}

#[test]
fn truncation_keeps_eot_in_the_last_slot() {
    let (_dir, tok) = tokenizer(8);
    let caption = "a dog running on the beach ".repeat(10);
    let full = tok.encode_tokens(&caption).unwrap();
    assert!(full.len() > 8);
    let row = tok.encode_batch(&[&caption]).unwrap();
    let mut expected = vec![i64::from(tok.sot_id().unwrap())];
    expected.extend(full[..6].iter().map(|&id| i64::from(id)));
    expected.push(i64::from(tok.eot_id()));
    assert_eq!(row, expected);
}

#[test]
fn file_truncation_padding_and_post_processor_are_ignored() {
    let (dir, tok) = tokenizer(16);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokenizer.json")).unwrap())
            .unwrap();
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 3,
        "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 5}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 7, "pad_type_id": 0, "pad_token": "x"});
    let odd = dir.path().join("odd.json");
    std::fs::write(&odd, json.to_string()).unwrap();
    let odd = TextTokenizer::from_file(&odd, 16).unwrap();
    let texts = ["two cats sitting near the old man in a garden", ""];
    assert_eq!(
        odd.encode_batch(&texts).unwrap(),
        tok.encode_batch(&texts).unwrap()
    );
}

#[test]
fn save_round_trips() {
    let (dir, tok) = tokenizer(16);
    let saved = dir.path().join("saved.json");
    tok.save(&saved).unwrap();
    let again = TextTokenizer::from_file(&saved, 16).unwrap();
    let texts = ["a café in the city", "children playing"];
    assert_eq!(
        again.encode_batch(&texts).unwrap(),
        tok.encode_batch(&texts).unwrap()
    );
    assert_eq!(again.vocab_size(), tok.vocab_size());
}

#[test]
fn missing_specials_and_bad_sizes_are_clear_errors() {
    let (dir, _tok) = tokenizer(16);
    let json = std::fs::read_to_string(dir.path().join("tokenizer.json")).unwrap();
    // Renamed, and no post-processor naming the new name: nothing says which token ends a row.
    let mut renamed: serde_json::Value =
        serde_json::from_str(&json.replace(EOT, "<|end|>")).unwrap();
    renamed["post_processor"] = serde_json::Value::Null;
    let path = dir.path().join("no-eot.json");
    std::fs::write(&path, renamed.to_string()).unwrap();
    let err = TextTokenizer::from_file(&path, 16).unwrap_err();
    assert!(matches!(err, TextError::MissingSpecial { .. }), "{err}");
    let msg = err.to_string();
    for want in [
        "no-eot.json",
        EOT,
        "`<|startoftext|>` (598), `<|end|>` (599)",
        "data.eot_token",
        "data.sot_token",
        "data.pad_token",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }

    let err = TextTokenizer::from_file(dir.path().join("tokenizer.json"), 1).unwrap_err();
    assert!(
        matches!(
            err,
            TextError::ContextLength {
                context_length: 1,
                needed: 2
            }
        ),
        "{err}"
    );
    let err = train_bpe(std::iter::empty(), 100, &dir.path().join("x.json")).unwrap_err();
    assert!(matches!(err, TextError::VocabSize(100)), "{err}");
}

#[test]
fn special_token_text_in_a_caption_is_plain_text() {
    let (_dir, tok) = tokenizer(32);
    let row = tok
        .encode_batch(&["a dog <|endoftext|> <|startoftext|> on the beach"])
        .unwrap();
    let (sot, eot) = (i64::from(tok.sot_id().unwrap()), i64::from(tok.eot_id()));
    assert_eq!(row.iter().filter(|&&id| id == sot).count(), 1);
    assert_eq!(row.iter().filter(|&&id| id == eot).count(), 1);
    let last = row.iter().rposition(|&id| id != 0).unwrap();
    assert_eq!(row[last], eot);
}

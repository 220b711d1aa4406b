//! Unit tests of special-token resolution on small hand-written WordLevel tokenizers.
use super::{NO_SOT, TextClean, TextError, TextTokenizer, TokenizerOptions, clean_caption};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const SPECIALS: [&str; 6] = ["<pad>", "</s>", "<unk>", "<s>", "[CLS]", "[SEP]"];
const WORDS: [&str; 6] = ["a", "red", "dog", "on", "the", "beach"];

/// Id of `token` in [`tokenizer_json`]'s vocabulary: specials first, then words.
fn id(token: &str) -> i64 {
    SPECIALS
        .iter()
        .chain(WORDS.iter())
        .position(|t| *t == token)
        .unwrap() as i64
}

/// A WordLevel tokenizer.json over [`SPECIALS`] and [`WORDS`] with `post_processor`.
fn tokenizer_json(post_processor: Value) -> Value {
    let vocab: serde_json::Map<String, Value> = SPECIALS
        .iter()
        .chain(WORDS.iter())
        .map(|t| (t.to_string(), json!(id(t))))
        .collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .map(|t| {
            json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": post_processor, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    })
}

/// A `TemplateProcessing` whose single template is `pieces` (`"$A"` is the sequence).
fn template(pieces: &[&str]) -> Value {
    let single: Vec<Value> = pieces
        .iter()
        .map(|p| match *p {
            "$A" => json!({"Sequence": {"id": "A", "type_id": 0}}),
            t => json!({"SpecialToken": {"id": t, "type_id": 0}}),
        })
        .collect();
    let specials: serde_json::Map<String, Value> = pieces
        .iter()
        .filter(|p| **p != "$A")
        .map(|t| {
            (
                t.to_string(),
                json!({"id": t, "ids": [id(t)], "tokens": [t]}),
            )
        })
        .collect();
    json!({"type": "TemplateProcessing", "single": single,
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": specials})
}

fn write(dir: &Path, json: &Value) -> PathBuf {
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn load(path: &Path, opts: &TokenizerOptions) -> TextTokenizer {
    TextTokenizer::load(path, opts).unwrap()
}

fn ids(tok: &TextTokenizer, ctx: usize, text: &str) -> Vec<i64> {
    let row = tok.encode_batch(&[text]).unwrap();
    assert_eq!(row.len(), ctx);
    row
}

#[test]
fn template_with_start_and_end_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &tokenizer_json(template(&["[CLS]", "$A", "[SEP]"])),
    );
    let tok = load(&path, &TokenizerOptions::new(6));
    assert_eq!(tok.sot_id(), Some(id("[CLS]") as u32));
    assert_eq!(tok.eot_id(), id("[SEP]") as u32);
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(
        ids(&tok, 6, "a red dog"),
        [id("[CLS]"), id("a"), id("red"), id("dog"), id("[SEP]"), 0]
    );
}

#[test]
fn template_without_start_token_pads_with_the_files_pad_and_truncates_before_eot() {
    let dir = tempfile::tempdir().unwrap();
    let mut json = tokenizer_json(template(&["$A", "</s>"]));
    json["padding"] = json!({"strategy": "BatchLongest", "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": id("<pad>"), "pad_type_id": 0, "pad_token": "<pad>"});
    // A sidecar bos_token must not add a start token the post-processor leaves out.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": "[SEP]"}).to_string(),
    )
    .unwrap();
    let path = write(dir.path(), &json);
    let tok = load(&path, &TokenizerOptions::new(5));
    assert_eq!(tok.sot_id(), None);
    let (eos, pad) = (id("</s>"), id("<pad>"));
    assert_eq!(ids(&tok, 5, "a dog"), [id("a"), id("dog"), eos, pad, pad]);
    // Too long: four text tokens fit without a start token, EOT stays last.
    assert_eq!(
        ids(&tok, 5, "a red dog on the beach"),
        [id("a"), id("red"), id("dog"), id("on"), eos]
    );
    assert_eq!(ids(&tok, 5, ""), [eos, pad, pad, pad, pad]);
}

#[test]
fn roberta_processing_names_cls_and_sep() {
    let dir = tempfile::tempdir().unwrap();
    let pp = json!({"type": "RobertaProcessing", "sep": ["</s>", id("</s>")],
        "cls": ["<s>", id("<s>")], "trim_offsets": true, "add_prefix_space": false});
    let path = write(
        dir.path(),
        &tokenizer_json(json!({"type": "Sequence",
        "processors": [{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": true}, pp]})),
    );
    let tok = load(&path, &TokenizerOptions::new(4));
    assert_eq!(
        (tok.sot_id(), tok.eot_id()),
        (Some(id("<s>") as u32), id("</s>") as u32)
    );
}

#[test]
fn tokenizer_config_strings_and_special_tokens_map_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &tokenizer_json(Value::Null));
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 8}).to_string(),
    )
    .unwrap();
    // transformers' AddedToken form; fills the pad token the first file leaves out.
    std::fs::write(
        dir.path().join("special_tokens_map.json"),
        json!({"eos_token": {"content": "[SEP]", "lstrip": false}, "pad_token":
               {"content": "<pad>", "special": true}})
        .to_string(),
    )
    .unwrap();
    let tok = load(&path, &TokenizerOptions::new(4));
    assert_eq!(tok.sot_id(), Some(id("<s>") as u32));
    assert_eq!(
        tok.eot_id(),
        id("</s>") as u32,
        "tokenizer_config.json first"
    );
    assert_eq!(tok.pad_id(), id("<pad>") as u32);

    // Alone, the map's object form is read.
    std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    let tok = load(&path, &TokenizerOptions::new(4));
    assert_eq!((tok.sot_id(), tok.eot_id()), (None, id("[SEP]") as u32));

    std::fs::write(dir.path().join("tokenizer_config.json"), "[1, 2]").unwrap();
    let err = TextTokenizer::load(&path, &TokenizerOptions::new(4)).unwrap_err();
    assert!(matches!(err, TextError::Sidecar { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

#[test]
fn config_keys_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &tokenizer_json(template(&["[CLS]", "$A", "[SEP]"])),
    );
    let opts = TokenizerOptions {
        sot_token: NO_SOT.into(),
        eot_token: "</s>".into(),
        pad_token: "<unk>".into(),
        ..TokenizerOptions::new(5)
    };
    let tok = load(&path, &opts);
    let (eos, unk) = (id("</s>"), id("<unk>"));
    assert_eq!(
        ids(&tok, 5, "red dog"),
        [id("red"), id("dog"), eos, unk, unk]
    );

    let opts = TokenizerOptions {
        sot_token: "<s>".into(),
        ..TokenizerOptions::new(5)
    };
    let tok = load(&path, &opts);
    assert_eq!(
        (tok.sot_id(), tok.eot_id()),
        (Some(id("<s>") as u32), id("[SEP]") as u32)
    );

    let opts = TokenizerOptions {
        eot_token: "<|endoftext|>".into(),
        ..TokenizerOptions::new(5)
    };
    let err = TextTokenizer::load(&path, &opts).unwrap_err();
    assert!(matches!(err, TextError::UnknownSpecial { .. }), "{err}");
    let msg = err.to_string();
    for want in [
        "data.eot_token",
        "<|endoftext|>",
        "tokenizer.json",
        "`</s>` (1)",
        "`[SEP]` (5)",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
}

#[test]
fn no_end_token_lists_the_files_specials_and_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &tokenizer_json(Value::Null));
    let err = TextTokenizer::load(&path, &TokenizerOptions::new(8)).unwrap_err();
    assert!(matches!(err, TextError::MissingSpecial { .. }), "{err}");
    let msg = err.to_string();
    for want in [
        "`<pad>` (0), `</s>` (1), `<unk>` (2), `<s>` (3), `[CLS]` (4), `[SEP]` (5)",
        "data.eot_token",
        "data.sot_token",
        "\"none\"",
        "data.pad_token",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
    // The keys alone are enough.
    let opts = TokenizerOptions {
        sot_token: "<s>".into(),
        eot_token: "</s>".into(),
        ..TokenizerOptions::new(8)
    };
    let tok = load(&path, &opts);
    assert_eq!(
        ids(&tok, 8, "a dog")[..4],
        [id("<s>"), id("a"), id("dog"), id("</s>")]
    );
}

#[test]
fn cleaning_is_clip_only_for_clips_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &tokenizer_json(template(&["$A", "</s>"])));
    let tok = load(&path, &TokenizerOptions::new(4));
    assert_eq!(tok.specials().clean, TextClean::Whitespace);
    // Not lower-cased: this vocabulary only has lower-case words.
    assert_eq!(
        ids(&tok, 4, "  Red\tdog "),
        [id("<unk>"), id("dog"), id("</s>"), 0]
    );
    let opts = TokenizerOptions {
        clean: TextClean::Canonicalize,
        ..TokenizerOptions::new(4)
    };
    let tok = load(&path, &opts);
    assert_eq!(
        ids(&tok, 4, "Red_dog!"),
        [id("red"), id("dog"), id("</s>"), 0]
    );

    assert_eq!(clean_caption("A  B&amp;c", TextClean::Whitespace), "A B&c");
    assert_eq!(
        clean_caption("A_b, \"C\"!", TextClean::Canonicalize),
        "a b c"
    );
    assert_eq!(clean_caption("A  B", TextClean::Clip), "a b");
}

//! `cliptrain tokenizer train` and `cliptrain tokenizer encode` end to end.
use std::process::{Command, Output};

fn cliptrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cliptrain"))
        .args(args)
        .env_remove("CLIPTRAIN_LOG")
        .output()
        .expect("run cliptrain")
}

#[test]
fn train_then_encode_json() {
    let dir = tempfile::tempdir().unwrap();
    let captions = dir.path().join("captions.txt");
    std::fs::write(
        &captions,
        "A dog running on the beach\n\nTwo cats &amp; a café\nthe old man sitting near a garden\n",
    )
    .unwrap();
    let out = dir.path().join("tokenizer.json");
    let (captions, out) = (captions.to_str().unwrap(), out.to_str().unwrap());
    let train = cliptrain(&[
        "tokenizer",
        "train",
        "--captions",
        captions,
        "--vocab-size",
        "540",
        "--out",
        out,
    ]);
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert!(train.status.success(), "{stderr}");
    assert!(
        stderr.contains("540 ids") && stderr.contains("from 3 captions"),
        "{stderr}"
    );

    let encode = cliptrain(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        out,
        "--context-length",
        "8",
        "--json",
        "a dog",
        "",
    ]);
    assert!(
        encode.status.success(),
        "{}",
        String::from_utf8_lossy(&encode.stderr)
    );
    let rows: Vec<Vec<i64>> = serde_json::from_slice(&encode.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.len() == 8 && r[0] == 538));
    assert_eq!(rows[1], [538, 539, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn missing_files_are_named() {
    let train = cliptrain(&[
        "tokenizer",
        "train",
        "--captions",
        "/nonexistent/c.txt",
        "--out",
        "/tmp/x.json",
    ]);
    assert!(!train.status.success());
    assert!(String::from_utf8_lossy(&train.stderr).contains("/nonexistent/c.txt"));
    let encode = cliptrain(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        "/nonexistent/t.json",
        "x",
    ]);
    assert!(!encode.status.success());
    assert!(String::from_utf8_lossy(&encode.stderr).contains("/nonexistent/t.json"));
}

use crate::common;
use serde_json::{Value, json};
use std::path::Path;

/// Words of the synthetic captions (others are `<unk>`).
const WORDS: [&str; 16] = [
    "a", "an", "the", "red", "green", "blue", "orange", "circle", "square", "ring", "star",
    "small", "large", "on", "left", "right",
];

fn special(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

/// SigLIP-like: a SentencePiece Unigram over letters and a few words, `</s>` ends rows by its
/// post-processor (`$A </s>`, no start token), `<pad>`/`</s>`/`<unk>` at 0/1/2 and the pad token
/// named only in `tokenizer_config.json`, as in SigLIP's Hugging Face folders.
fn write_unigram(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab = vec![
        json!(["<pad>", 0.0]),
        json!(["</s>", 0.0]),
        json!(["<unk>", 0.0]),
    ];
    vocab.push(json!(["▁", -2.0]));
    vocab.extend(('a'..='z').map(|c| json!([c.to_string(), -4.0])));
    vocab.extend(WORDS.iter().map(|w| json!([format!("▁{w}"), -1.0])));
    let metaspace = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                           "split": true});
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": null, "pre_tokenizer": metaspace, "decoder": metaspace,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
               "model_max_length": 16})
        .to_string(),
    )
    .unwrap();
}

/// A WordLevel over [`WORDS`] with `<unk>`, `<pad>`, and `<sot>`/`<eot>` last; nothing in the
/// file says which ends a row, so the run config's keys must.
fn write_word_level(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut names = vec!["<unk>", "<pad>"];
    names.extend(WORDS);
    names.extend(["<sot>", "<eot>"]);
    let vocab: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    let n = names.len();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<pad>"), special(n - 2, "<sot>"),
                         special(n - 1, "<eot>")],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

/// `tiny.toml` ([`common::tiny::two_step`]) with `data.tokenizer = tokenizer` and `changes`
/// (`section.key=value`); trains it (2 steps) and runs `eval retrieval` on the result.
fn train_and_eval(d: &Path, tokenizer: &str, changes: &[&str]) -> Value {
    common::tiny::two_step("quick_gelu")
        .set(&format!("data.tokenizer={tokenizer:?}"))
        .sets(changes)
        .write(d.join("tiny.toml"));
    common::ok(common::cliptrain(
        &["-q", "train", "--config", "tiny.toml"],
        d,
    ));
    common::ok(common::cliptrain(
        &[
            "-q",
            "eval",
            "retrieval",
            "--checkpoint",
            "runs/t",
            "--data",
            "syn/eval-000000.tar",
            "--json",
            "r.json",
        ],
        d,
    ));
    serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap()
}

/// `tiny_toml`'s data (2 shards of 32 samples at 32 px, 8 eval samples) without its BPE.
fn synth(d: &Path) {
    common::ok(common::cliptrain(
        &[
            "-q",
            "data",
            "synth",
            "--out",
            "syn",
            "--train",
            "64",
            "--eval",
            "8",
            "--image-size",
            "32",
            "--shard-size",
            "32",
        ],
        d,
    ));
}

/// Every number in `v`, in order, but a checkpoint's `step` (an exported folder has none).
fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "step")
            .flat_map(|(_, v)| numbers(v))
            .collect(),
        _ => vec![],
    }
}

fn encode(d: &Path, args: &[&str]) -> Vec<Vec<i64>> {
    let mut all = vec!["-q", "tokenizer", "encode", "--json"];
    all.extend(args);
    serde_json::from_str(&common::ok(common::cliptrain(&all, d))).unwrap()
}

#[test]
fn sentencepiece_tokenizer_without_start_token_trains_evaluates_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    synth(d);
    write_unigram(&d.join("uni"));
    let r = train_and_eval(d, "uni/tokenizer.json", &[r#"model.text.pooling="last""#]);
    assert_eq!(r["images"].as_u64(), Some(8), "{r}");

    // Argmax pooling would pool words: `</s>` is id 1, not the largest.
    let out = common::cliptrain(
        &[
            "train",
            "--config",
            "tiny.toml",
            "--set",
            "model.text.pooling=\"argmax\"",
            "--set",
            "run.name=\"argmax\"",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("end token of") && err.contains("is id 1"),
        "{err}"
    );

    // Rows: no start token, `</s>` last, padded with `</s>` (tokenizer_config.json's pad).
    let rows = encode(
        d,
        &["--config", "tiny.toml", "a red ring", "the  orange_star"],
    );
    assert_eq!(rows[0][..4], [30, 33, 39, 1], "{rows:?}");
    assert!(rows[0][4..].iter().all(|&id| id == 1), "{rows:?}");
    assert_eq!(rows[1].len(), 16);
    // The checkpoint folder carries the files that named the specials, and reads back the same.
    let ckpt = d.join("runs/t/latest");
    assert!(ckpt.join("tokenizer_config.json").is_file());
    let again = encode(
        d,
        &[
            "--tokenizer",
            ckpt.join("tokenizer.json").to_str().unwrap(),
            "--context-length",
            "16",
            "a red ring",
            "the  orange_star",
        ],
    );
    assert_eq!(again, rows);

    // OpenCLIP states last pooling; HF CLIPModel cannot, and says so.
    common::ok(common::cliptrain(
        &[
            "-q",
            "export",
            "openclip",
            "--checkpoint",
            "runs/t",
            "--out",
            "oc",
        ],
        d,
    ));
    let oc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("oc/open_clip_config.json")).unwrap())
            .unwrap();
    assert_eq!(oc["model_cfg"]["text_cfg"]["pool_type"], "last");
    // The folder reads back (pool_type, tokenizer files) to the same retrieval numbers.
    common::ok(common::cliptrain(
        &[
            "-q",
            "eval",
            "retrieval",
            "--checkpoint",
            "oc",
            "--data",
            "syn/eval-000000.tar",
            "--json",
            "r-oc.json",
        ],
        d,
    ));
    let r_oc: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r-oc.json")).unwrap()).unwrap();
    assert_eq!(numbers(&r_oc), numbers(&r));
    let map: Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("oc/special_tokens_map.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        map,
        json!({"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"})
    );
    let out = common::cliptrain(
        &["export", "hf", "--checkpoint", "runs/t", "--out", "hf"],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("pooling = \"last\""),
        "{err}"
    );
    assert!(!d.join("hf").exists(), "a refused export writes nothing");
}

#[test]
fn word_level_tokenizer_with_specials_from_config_trains_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    synth(d);
    write_word_level(&d.join("wl"));
    // Without the keys: the error lists the file's specials and the keys that choose them.
    let out = common::cliptrain(
        &[
            "tokenizer",
            "encode",
            "--tokenizer",
            "wl/tokenizer.json",
            "a red ring",
        ],
        d,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "`<sot>` (18)",
        "`<eot>` (19)",
        "data.eot_token",
        "data.sot_token",
        "data.pad_token",
    ] {
        assert!(
            !out.status.success() && err.contains(want),
            "{want:?} not in: {err}"
        );
    }
    // `config check` loads the tokenizer as training would: a key naming no token is explained.
    common::tiny::two_step("quick_gelu")
        .sets(&[
            r#"data.tokenizer="wl/tokenizer.json""#,
            r#"data.eot_token="</s>""#,
        ])
        .write(d.join("bad.toml"));
    let out = common::cliptrain(&["config", "check", "bad.toml"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["data.eot_token = \"</s>\" is not a token", "`<eot>` (19)"] {
        assert!(
            !out.status.success() && err.contains(want),
            "{want:?} not in: {err}"
        );
    }
    let keys = [
        r#"data.sot_token="<sot>""#,
        r#"data.eot_token="<eot>""#,
        r#"data.pad_token="<pad>""#,
        r#"model.text.pooling="argmax""#,
    ];
    let r = train_and_eval(d, "wl/tokenizer.json", &keys);
    assert_eq!(r["images"].as_u64(), Some(8), "{r}");
    let rows = encode(d, &["--config", "tiny.toml", "A red ring"]);
    assert_eq!(rows[0][..6], [18, 2, 5, 11, 19, 1], "{rows:?}");
    // Starting from the checkpoint brings its tokenizer with the keys that chose its specials.
    common::tiny::two_step("quick_gelu")
        .sets(&[
            r#"data.tokenizer="""#,
            r#"model.init_from="runs/t""#,
            r#"run.name="ft""#,
        ])
        .write(d.join("ft.toml"));
    common::ok(common::cliptrain(
        &["-q", "train", "--config", "ft.toml"],
        d,
    ));
    let saved = std::fs::read_to_string(d.join("runs/ft/latest/config.toml")).unwrap();
    for want in ["eot_token = \"<eot>\"", "pooling = \"argmax\""] {
        assert!(saved.contains(want), "{want:?} not in: {saved}");
    }
    // The exported folder states them, and reads back the same rows without the keys.
    common::ok(common::cliptrain(
        &[
            "-q",
            "export",
            "hf",
            "--checkpoint",
            "runs/t",
            "--out",
            "hf",
        ],
        d,
    ));
    let again = encode(
        d,
        &[
            "--tokenizer",
            "hf/tokenizer.json",
            "--context-length",
            "16",
            "A red ring",
        ],
    );
    assert_eq!(again, rows);
    let hf: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("hf/config.json")).unwrap()).unwrap();
    assert_eq!(
        hf["text_config"]["eos_token_id"], 2,
        "argmax is HF's legacy eos_token_id 2"
    );
    assert_eq!(hf["text_config"]["bos_token_id"], 18);
}

//! Issue 27, items 15 and 22: exported tokenizers are read back by transformers and open_clip
//! as cliptrain encodes (whatever the tokenizer's model, whatever its specials are called), and
//! `plot` stays bounded on a log of thousands of metrics and draws around values it cannot.
use crate::common::{self, cliptrain, repo};
use cliptrain::data::synth::{Domain, class_names};
use cliptrain::interop::{LoadedModel, hf, openclip};
use cliptrain::text::{EOT, SOT};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Device;

const FIXTURE: &str = "tests/fixtures/checkpoint-per-tensor-adamw/step-0000003";

/// 100 captions from the synthetic data's class names in its prompt styles, with capitals,
/// runs of spaces, words of the other domain (unknown to the word-level vocabulary) and one
/// caption too long for the 16-id rows.
fn captions() -> Vec<String> {
    let shapes = class_names(Domain::Shapes);
    let symbols = class_names(Domain::Symbols);
    let styles = [
        "a photo of a {}.",
        "A Picture of a {}",
        "there is a  {}   in the image.",
        "an image of a {}, on the left",
        "a drawing of a {} near the top of a striped background with a {} beside it",
    ];
    (0..100)
        .map(|i| {
            let class = match i % 4 {
                3 => &symbols[i % symbols.len()],
                _ => &shapes[i % shapes.len()],
            };
            let class = match i % 7 {
                0 => class.to_uppercase(),
                _ => class.clone(),
            };
            styles[i % styles.len()].replace("{}", &class)
        })
        .collect()
}

/// The words of `captions`, lower-cased and split as the `Whitespace` pre-tokenizer does.
fn words(captions: &[String]) -> Vec<String> {
    let mut words: Vec<String> = captions
        .iter()
        .flat_map(|c| {
            c.to_lowercase()
                .replace(['.', ','], " ")
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    words.sort();
    words.dedup();
    words
}

fn special(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": true})
}

/// The case: a WordLevel vocabulary of the shapes' words (symbols are `<unk>`) whose
/// specials are spelled like OpenAI CLIP's, and no post-processor.
fn word_level(captions: &[String]) -> Value {
    let symbols = words(&class_names(Domain::Symbols));
    let shapes = words(&class_names(Domain::Shapes));
    let known = words(captions)
        .into_iter()
        .filter(|w| !symbols.contains(w) || shapes.contains(w));
    let names = ["<unk>".to_string(), ".".into(), ",".into()]
        .into_iter()
        .chain(known)
        .chain([SOT.to_string(), EOT.to_string()]);
    let vocab: serde_json::Map<String, Value> =
        names.enumerate().map(|(i, w)| (w, json!(i))).collect();
    let (sot, eot) = (vocab.len() - 2, vocab.len() - 1);
    json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(sot, SOT), special(eot, EOT)],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}})
}

/// A case-sensitive SentencePiece-style Unigram (T5's layout: `<pad>` 0, `</s>` 1, `<unk>` 2, no
/// start token, `$A </s>`): whole-word pieces for the lower-case words, letters, a few
/// fragments; capitals are unknown.
fn unigram(captions: &[String]) -> Value {
    let mut pieces = vec![
        json!(["<pad>", 0.0]),
        json!(["</s>", 0.0]),
        json!(["<unk>", 0.0]),
        json!(["\u{2581}", -3.0]),
    ];
    for (i, w) in words(captions).iter().enumerate() {
        pieces.push(json!([format!("\u{2581}{w}"), -4.0 - (i % 7) as f64]));
    }
    for c in ('a'..='z').chain(['.', ',']) {
        pieces.push(json!([c.to_string(), -8.0]));
    }
    for frag in ["ing", "ed", "er", "\u{2581}re", "\u{2581}st"] {
        pieces.push(json!([frag, -6.0]));
    }
    json!({"version": "1.0", "truncation": null,
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"},
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                          "prepend_scheme": "always", "split": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": null,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": pieces, "byte_fallback": false}})
}

/// The fixture checkpoint with `tokenizer` (None: its own CLIP BPE) in `dir`.
fn checkpoint_with(dir: &Path, tokenizer: Option<&Value>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(repo().join(FIXTURE)).unwrap() {
        let from = entry.unwrap().path();
        std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
    }
    if let Some(t) = tokenizer {
        std::fs::write(dir.join("tokenizer.json"), t.to_string()).unwrap();
    }
    dir.to_path_buf()
}

/// Ids up to and including the first `eot`.
fn until_eot(row: &[i64], eot: i64) -> &[i64] {
    let end = row
        .iter()
        .position(|&i| i == eot)
        .map_or(row.len(), |p| p + 1);
    &row[..end]
}

#[test]
fn exported_tokenizers_read_back_as_cliptrain_encodes_for_bpe_wordlevel_and_unigram() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let captions = captions();
    let cases = [
        ("bpe", None, "CLIPTokenizer"),
        (
            "wordlevel",
            Some(word_level(&captions)),
            "PreTrainedTokenizerFast",
        ),
        (
            "unigram",
            Some(unigram(&captions)),
            "PreTrainedTokenizerFast",
        ),
    ];
    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    let mut folders = Vec::new();
    let mut expected = Vec::new();
    for (name, tokenizer, class) in &cases {
        let ckpt = checkpoint_with(&d.join(name), tokenizer.as_ref());
        let loaded = {
            let _rng = common::rng_lock();
            LoadedModel::open(&ckpt, Device::Cpu).unwrap()
        };
        let tok = loaded.tokenizer().unwrap();
        let ctx = tok.context_length();
        let rows: Vec<Vec<i64>> = tok
            .encode_batch(&texts)
            .unwrap()
            .chunks(ctx)
            .map(<[i64]>::to_vec)
            .collect();
        for (kind, out) in [
            ("hf", d.join(format!("{name}-hf"))),
            ("openclip", d.join(format!("{name}-oc"))),
        ] {
            match kind {
                "hf" => hf::export(&loaded, &out, false, &|| false).unwrap(),
                _ => openclip::export(&loaded, &out, false, &|| false).unwrap(),
            };
            let config: Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(config["tokenizer_class"], *class, "{name} {kind}");
            assert_eq!(config["model_max_length"], ctx, "{name} {kind}");
            assert_eq!(config["do_lower_case"], tok.lowercases(), "{name} {kind}");
            folders.push(json!({"dir": out, "context_length": ctx}));
            expected.push((format!("{name} {kind}"), tok.clone(), rows.clone()));
        }
    }
    let job = d.join("job.json");
    let job_text = json!({"captions": captions, "folders": folders}).to_string();
    std::fs::write(&job, job_text).unwrap();
    let result = d.join("result.json");
    let out = Command::new(common::venv_python())
        .arg(repo().join("scripts/tokenizer_export_parity.py"))
        .args([&job, &result])
        .output()
        .expect("run the venv python");
    assert!(
        out.status.success(),
        "scripts/tokenizer_export_parity.py failed (the reference packages come from \
         `scripts/bootstrap.sh --ref`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(results.len(), expected.len());
    for (r, (label, tok, rows)) in results.iter().zip(&expected) {
        let clip = tok.is_clip_bpe();
        assert_eq!(
            r["auto_class"] == "CLIPTokenizer",
            clip,
            "{label}: {}",
            r["auto_class"]
        );
        assert_eq!(r["eos"], tok.eot_id(), "{label}");
        assert_eq!(r["bos"], json!(tok.sot_id()), "{label}");
        let eot = i64::from(tok.eot_id());
        let mut readers = vec![("AutoTokenizer", &r["auto_ids"])];
        if let Some(ids) = r.get("open_clip_ids") {
            readers.push(("open_clip", ids));
        }
        for (reader, ids) in readers {
            let ids: Vec<Vec<i64>> = serde_json::from_value(ids.clone()).unwrap();
            assert_eq!(ids.len(), rows.len());
            // CLIP's BPE pads with 0 here and with EOT in transformers (the same features under
            // EOT pooling); every other tokenizer must give the very same rows.
            let differing: Vec<String> = ids
                .iter()
                .zip(rows)
                .zip(&captions)
                .filter(|((theirs, ours), _)| match clip {
                    true => until_eot(theirs, eot) != until_eot(ours, eot),
                    false => *theirs != *ours,
                })
                .map(|((theirs, ours), c)| {
                    format!("{c:?}\n  {reader}: {theirs:?}\n  ours: {ours:?}")
                })
                .collect();
            assert!(
                differing.is_empty(),
                "{label}, {reader}: {} of {} captions differ:\n{}",
                differing.len(),
                captions.len(),
                differing[..differing.len().min(5)].join("\n")
            );
        }
    }
}

/// A run folder holding `rows` as its metrics.jsonl.
fn run_with(d: &Path, name: &str, rows: &str) -> PathBuf {
    let run = d.join(name);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("metrics.jsonl"), rows).unwrap();
    run
}

fn plot(run: &Path, png: &Path) -> (String, image::RgbImage) {
    let out = cliptrain(
        &[
            "plot",
            run.to_str().unwrap(),
            "--out",
            png.to_str().unwrap(),
        ],
        run.parent().unwrap(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (stderr, image::open(png).unwrap().to_rgb8())
}

#[test]
fn plot_of_twelve_thousand_metrics_draws_a_bounded_picture_and_names_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for step in 1..=20 {
        rows += &format!(
            "{{\"kind\":\"train\",\"step\":{step},\"loss\":{}}}\n",
            3.0 - step as f64 / 10.0
        );
    }
    for i in 0..12_000 {
        rows += &format!("{{\"kind\":\"eval\",\"step\":20,\"task{i:05}/top1\":0.5}}\n");
    }
    let run = run_with(dir.path(), "many", &rows);
    let (stderr, img) = plot(&run, &dir.path().join("many.png"));
    // Ten rows of three panels under a legend of one run, and the line of the note.
    let max = cliptrain::plot::MAX_PANELS as u32;
    assert_eq!(img.dimensions(), (3 * 420, 8 + 16 + 8 + max / 3 * 270 + 16));
    let left_out = 12_001 - max as usize;
    assert!(
        stderr.contains(&format!("{left_out} metric(s) not drawn"))
            && stderr.contains("--metric")
            && stderr.contains("Not drawn: eval/task00029/top1, eval/task00030/top1")
            && stderr.contains(&format!("and {} more", left_out - 100)),
        "{stderr}"
    );
    assert!(
        stderr.len() < 8000,
        "the note is bounded: {} bytes",
        stderr.len()
    );
}

#[test]
fn plot_skips_values_it_cannot_draw_counts_them_and_draws_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for step in 1..=40 {
        let loss = match step {
            10 => "1e308".to_string(),
            20 => "-1e308".into(),
            30 => "NaN".into(),
            35 => "null".into(),
            _ => format!("{}", 5.0 - step as f64 / 20.0),
        };
        rows += &format!("{{\"kind\":\"train\",\"step\":{step},\"loss\":{loss},\"lr\":0.001}}\n");
    }
    let run = run_with(dir.path(), "huge", &rows);
    let (stderr, img) = plot(&run, &dir.path().join("huge.png"));
    assert!(
        stderr.contains("4 value(s) are null, NaN, infinite or beyond ±1e300")
            && stderr.contains("loss: 4"),
        "{stderr}"
    );
    // The loss panel (the first, under the legend) has its line: tab10 blue inside its frame.
    let blue = (76..420 - 14)
        .flat_map(|x| (32 + 24..32 + 270 - 36).map(move |y| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 == [31, 119, 180])
        .count();
    assert!(blue > 300, "the loss line is drawn: {blue} pixels");
}

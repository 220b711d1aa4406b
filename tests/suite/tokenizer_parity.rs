//! Our `TextTokenizer` on OpenAI CLIP's tokenizer.json gives exactly `open_clip.tokenize`'s ids.
//!
//! CLIP's tokenizer.json is derived offline by `scripts/make_clip_tokenizer.py` and the reference
//! ids come from `scripts/tokenizer_parity.py`, both run with the torch venv's python. Missing
//! Python packages fail the test (they are part of `scripts/bootstrap.sh --ref`), never skip it.
use crate::common;
use crate::common::repo;
use cliptrain::text::TextTokenizer;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const CONTEXT: usize = 77;

/// Captions chosen to exercise every cleaning and pre-tokenizer path. Mojibake ("cafÃ©") is
/// left out on purpose: repairing it is the one part of `ftfy.fix_text` we do not port.
fn captions() -> Vec<String> {
    let mut v: Vec<String> = [
        "A photo of a cat.",
        "Two dogs playing in the snow, one brown & one white!!!",
        "It's a man's world; they're here, we've gone, I'm sure, you'll see, he'd know.",
        "Room 101 costs $3,499.99 (20% off) on 2024-05-17",
        "🐶🐱 emoji party 🎉👍🏽",
        "東京の夜景と富士山",
        "Красная площадь в Москве",
        "Crème brûlée at the café in Zürich, naïve señor",
        "",
        "   \t  \n ",
        "Fish &amp; chips &lt;3 &quot;best&quot; in town &#39;n&#39; more",
        "\u{201c}Curly\u{201d} quotes and \u{2018}single\u{2019} ones don\u{2019}t break",
        "A ﬁne ﬂower in the oﬃce",
        "ＦＵＬＬＷＩＤＴＨ text １２３！",
        "non\u{a0}breaking\u{a0}space\u{2009}here",
        "مرحبا بالعالم",
        "NFD cafe\u{301} and re\u{301}sume\u{301}",
        "UPPER lower MiXeD CaSe",
        "hyphen-ated words, e-mail@example.com and https://example.org/path?q=1",
        "tabs\tand\nnewlines\r\nmixed",
        "<b>bold</b> &amp;amp; markup",
        "Ελληνικά γράμματα",
        "ideographic\u{3000}space and a BOM\u{feff} inside",
        "한국어 문장입니다",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a very long caption about a dog ".repeat(20));
    v.push(
        (1..=120)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    v
}

/// Runs a repo script with the venv python; a failure names the script and the fix.
fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new(common::venv_python())
        .arg(repo().join("scripts").join(script))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run the venv python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/{script} failed (the reference packages come from \
         `scripts/bootstrap.sh --ref`):\n{stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn clip_tokenizer(dir: &Path) -> TextTokenizer {
    let path = dir.join("clip-tokenizer.json");
    run_script("make_clip_tokenizer.py", &[path.to_str().unwrap()]);
    TextTokenizer::from_file(&path, CONTEXT).expect("load CLIP's tokenizer.json")
}

#[test]
fn clip_tokenizer_matches_open_clip_on_every_caption() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = clip_tokenizer(dir.path());
    assert_eq!(tokenizer.vocab_size(), 49408);
    assert_eq!(
        (tokenizer.sot_id(), tokenizer.eot_id()),
        (Some(49406), 49407)
    );

    let captions = captions();
    let captions_path = dir.path().join("captions.json");
    std::fs::write(&captions_path, serde_json::to_string(&captions).unwrap()).unwrap();
    let ids_path = dir.path().join("open_clip_ids.json");
    run_script(
        "tokenizer_parity.py",
        &[
            "ids",
            captions_path.to_str().unwrap(),
            ids_path.to_str().unwrap(),
        ],
    );
    let expected: Vec<Vec<i64>> =
        serde_json::from_str(&std::fs::read_to_string(&ids_path).unwrap()).unwrap();

    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    let ours = tokenizer.encode_batch(&texts).unwrap();
    let mismatches: Vec<String> = ours
        .chunks(CONTEXT)
        .zip(&expected)
        .zip(&captions)
        .filter(|((a, b), _)| a != &b.as_slice())
        .map(|((a, b), c)| format!("{c:?}\n  ours:      {a:?}\n  open_clip: {b:?}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} captions differ from open_clip:\n{}",
        mismatches.len(),
        captions.len(),
        mismatches.join("\n")
    );
    // The two long captions really were truncated, with EOT in the last slot.
    let long = expected.iter().filter(|r| r[CONTEXT - 1] == 49407).count();
    assert_eq!(long, 2);
}

/// Synthetic captions for the throughput comparison: a few hundred words in varied order, with
/// punctuation and digits, 8–24 words each.
fn synthetic_captions(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "a",
        "the",
        "photo",
        "of",
        "dog",
        "cat",
        "running",
        "on",
        "beach",
        "with",
        "red",
        "ball",
        "two",
        "people",
        "sitting",
        "near",
        "old",
        "building",
        "city",
        "street",
        "at",
        "night",
        "mountain",
        "lake",
        "sunset",
        "colorful",
        "flowers",
        "garden",
        "child's",
        "bicycle",
        "it's",
        "2019",
        "wedding",
        "cake",
        "illustration",
        "vector",
        "isolated",
        "white",
        "background,",
        "modern",
        "kitchen",
        "interior",
        "design!",
        "&",
        "close-up",
        "portrait",
        "woman",
        "man",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let len = 8 + (next() % 17) as usize;
            let words: Vec<&str> = (0..len)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            words.join(" ")
        })
        .collect()
}

/// Captions/s of `encode_batch` against `open_clip.tokenize` on the same 20k captions.
/// A measurement, not a check: `cargo test --release -- --ignored tokenizer_throughput`.
#[test]
#[ignore]
fn tokenizer_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = clip_tokenizer(dir.path());
    let captions = synthetic_captions(20_000);
    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    tokenizer.encode_batch(&texts[..100]).unwrap();
    let start = Instant::now();
    let ids = tokenizer.encode_batch(&texts).unwrap();
    let ours = start.elapsed().as_secs_f64();
    assert_eq!(ids.len(), captions.len() * CONTEXT);

    // Cleaning alone, single-threaded, to see its share of the cost.
    let start = Instant::now();
    let cleaned: usize = texts
        .iter()
        .map(|t| cliptrain::text::clean_text(t).len())
        .sum();
    let clean_s = start.elapsed().as_secs_f64();
    assert!(cleaned > 0);

    let path = dir.path().join("captions.txt");
    std::fs::write(&path, captions.join("\n")).unwrap();
    let report = run_script("tokenizer_parity.py", &["time", path.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    let theirs = report["seconds"].as_f64().unwrap();
    println!(
        "encode_batch: {:.0} captions/s ({} threads; clean_text alone {:.0}/s on one thread); \
         open_clip.tokenize: {:.0} captions/s",
        captions.len() as f64 / ours,
        rayon::current_num_threads(),
        captions.len() as f64 / clean_s,
        captions.len() as f64 / theirs
    );
}

//! SentencePiece models (issue 22, part 2): a folder with `spiece.model` and no
//! `tokenizer.json` tokenizes exactly as transformers' `SiglipTokenizer` does, a BPE model as
//! sentencepiece's own encoder does, and the exported `tokenizer.json` gives transformers'
//! fast tokenizer the same rows. Fixtures and reference ids: `scripts/sentencepiece_fixture.py`.
use crate::common::{self, repo};
use cliptrain::text::{TextClean, TextTokenizer, TokenizerOptions, spm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CONTEXT: usize = 64;

/// The fixture folder, made once for every test that needs it.
pub fn fixture() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        python(&[d.path().to_str().unwrap()]);
        d
    })
    .path()
}

fn python(args: &[&str]) -> String {
    let out = Command::new(common::venv_python())
        .arg(repo().join("scripts/sentencepiece_fixture.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/sentencepiece_fixture.py failed (missing packages: scripts/bootstrap.sh --ref):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("captions.json")).unwrap()).unwrap()
}

fn captions(r: &Value) -> Vec<String> {
    r["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Captions whose rows differ, with both rows, for the failure message.
fn mismatches(captions: &[String], want: &[Vec<i64>], got: &[Vec<i64>]) -> Vec<String> {
    captions
        .iter()
        .zip(want.iter().zip(got))
        .filter(|(_, (w, g))| w != g)
        .map(|(c, (w, g))| format!("{c:?}\n  want {w:?}\n  got  {g:?}"))
        .collect()
}

#[test]
fn a_siglip_spiece_model_gives_siglip_tokenizers_rows_and_exports_a_tokenizer_json_that_does_too() {
    let r = reference();
    let captions = captions(&r);
    let path: PathBuf = fixture().join("siglip/spiece.model");
    let tok = TextTokenizer::load(&path, &TokenizerOptions::new(CONTEXT)).unwrap();
    // From tokenizer_config.json: SigLIP's cleaning; no start token; `</s>` ends and pads.
    let s = tok.specials();
    assert_eq!(
        (s.sot, s.eot, s.pad, s.clean),
        (None, 1, 1, TextClean::Siglip)
    );
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let flat = tok.encode_batch(&refs).unwrap();
    let got: Vec<Vec<i64>> = flat.chunks(CONTEXT).map(<[i64]>::to_vec).collect();
    let want: Vec<Vec<i64>> = r["siglip_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    assert_eq!(want.len(), 2004);
    // The fixture reaches every path: truncation, unknown pieces, empty captions.
    assert!(
        want.iter()
            .any(|row| row[CONTEXT - 1] == 1 && row[CONTEXT - 2] != 1)
    );
    assert!(want.iter().any(|row| row.contains(&2)));
    let bad = mismatches(&captions, &want, &got);
    assert!(
        bad.is_empty(),
        "{} of {} rows differ from SiglipTokenizer's:\n{}",
        bad.len(),
        want.len(),
        bad[..bad.len().min(3)].join("\n")
    );

    // The export's tokenizer.json states the cleaning and the end token for other readers.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("tokenizer.json");
    tok.for_export().unwrap().save(&file, false).unwrap();
    let report: Value = serde_json::from_str(&python(&[
        "--check-export",
        file.to_str().unwrap(),
        fixture().join("captions.json").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(report["mismatches"], 0, "{report}");
}

#[test]
fn a_bpe_sentencepiece_model_with_byte_fallback_and_user_pieces_encodes_as_sentencepiece() {
    let r = reference();
    let captions = captions(&r);
    let tok = spm::load(&fixture().join("bpe/sentencepiece.bpe.model")).unwrap();
    let got: Vec<Vec<i64>> = captions
        .iter()
        .map(|c| {
            let e = tok.encode(c.as_str(), false).unwrap();
            e.get_ids().iter().map(|&i| i64::from(i)).collect()
        })
        .collect();
    let want: Vec<Vec<i64>> = r["bpe_ids"].as_array().unwrap().iter().map(ids).collect();
    // Byte pieces (`<0x00>`..`<0xFF>`, ids 5..=260 after the specials and the two
    // user-defined pieces) and the user-defined pieces are reached.
    assert!(want.iter().flatten().any(|&id| (5..=260).contains(&id)));
    assert!(want.iter().flatten().any(|&id| id == 3 || id == 4));
    let bad = mismatches(&captions, &want, &got);
    assert!(
        bad.is_empty(),
        "{} of {} differ from sentencepiece's encode:\n{}",
        bad.len(),
        want.len(),
        bad[..bad.len().min(3)].join("\n")
    );
}

#[test]
fn damaged_sentencepiece_files_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture().join("siglip/spiece.model")).unwrap();
    let cut = d.path().join("cut.model");
    std::fs::write(&cut, &good[..good.len() / 3]).unwrap();
    let err = TextTokenizer::load(&cut, &TokenizerOptions::new(CONTEXT)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("SentencePiece model")
            && msg.contains("cut.model")
            && msg.contains("cut short"),
        "{msg}"
    );
    let json = d.path().join("tokenizer.model");
    std::fs::write(&json, b"{\"version\": \"1.0\"}").unwrap();
    let msg = TextTokenizer::load(&json, &TokenizerOptions::new(CONTEXT))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tokenizer.model"), "{msg}");
}

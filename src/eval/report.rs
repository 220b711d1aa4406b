//! Human- and machine-readable reports: Markdown tables for stdout, JSON files.
use super::EvalError;
use super::metrics::GroupResult;
use super::retrieval::RetrievalReport;
use super::zeroshot::ZeroShotReport;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The zero-shot table: one row for all labels, then each group ("seen", "held_out").
pub fn zeroshot_markdown(r: &ZeroShotReport) -> String {
    let m = &r.metrics;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Zero-shot classification on {}: {} images, {} classes, {} prompt templates per class\n",
        r.data, m.samples, m.classes, r.templates
    );
    let _ = writeln!(
        s,
        "| labels | classes | images | top-1 | top-5 | mean per-class recall | chance top-1 | top-1 among the group's classes | chance among them |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut names: Vec<&String> = m.groups.keys().collect();
    names.sort_by_key(|n| match n.as_str() {
        "all" => 0,
        "seen" => 1,
        "held_out" => 2,
        _ => 3,
    });
    for name in names {
        let g: &GroupResult = &m.groups[name];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            name.replace('_', "-"),
            g.classes,
            g.samples,
            pct(g.top1),
            pct(g.top5),
            pct(g.mean_per_class_recall),
            pct(g.chance_top1),
            pct(g.top1_within_group),
            pct(g.chance_within_group),
        );
    }
    if !m.confused_pairs.is_empty() {
        let pairs: Vec<String> = m
            .confused_pairs
            .iter()
            .take(5)
            .map(|p| {
                format!(
                    "{} → {} ({} images, {})",
                    p.truth,
                    p.predicted,
                    p.count,
                    pct(p.fraction)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "\nMost confused (true → predicted): {}",
            pairs.join("; ")
        );
    }
    if r.skipped.total() > 0 {
        let _ = writeln!(s, "Skipped samples: {} ({})", r.skipped.total(), r.skipped);
    }
    s
}

pub fn retrieval_markdown(r: &RetrievalReport) -> String {
    let m = &r.metrics;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Retrieval on {}: {} images, {} captions\n",
        r.data, m.images, m.texts
    );
    let _ = writeln!(s, "| direction | R@1 | R@5 | R@10 |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for (dir, v) in [
        ("image → text", &m.image_to_text),
        ("text → image", &m.text_to_image),
    ] {
        let _ = writeln!(
            s,
            "| {dir} | {} | {} | {} |",
            pct(v["recall@1"]),
            pct(v["recall@5"]),
            pct(v["recall@10"])
        );
    }
    s
}

/// Pretty JSON, written to a temporary file and renamed, so a reader never sees half a file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), EvalError> {
    let err = |e: String| EvalError::Input(format!("writing {}: {e}", path.display()));
    let text = serde_json::to_string_pretty(value).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

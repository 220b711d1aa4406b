//! Human- and machine-readable reports: Markdown tables for stdout, JSON files.
use super::EvalError;
use super::metrics::GroupResult;
use super::multilabel::MultiLabelReport;
use super::retrieval::RetrievalReport;
use super::suite::{Suite, SuiteResults, TaskFigures};
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

/// One model's column of a suite table.
pub struct SuiteColumn {
    /// The checkpoint as given (or "this run" during training).
    pub checkpoint: String,
    pub step: Option<u64>,
    /// One entry per suite task, in suite order.
    pub results: SuiteResults,
}

impl SuiteColumn {
    fn header(&self) -> String {
        match self.step {
            Some(s) => format!("{} (step {s})", self.checkpoint),
            None => self.checkpoint.clone(),
        }
    }
}

/// Per task, the first column that succeeded: its figures give the chance level and size.
fn first_ok(cols: &[SuiteColumn], task: usize) -> Option<&TaskFigures> {
    cols.iter()
        .find_map(|c| c.results.get(task).and_then(|(_, r)| r.as_ref().ok()))
}

/// The suite table: one row per task and metric, one column per checkpoint, the chance level
/// beside; failures numbered below the table.
pub fn suite_markdown(suite: &Suite, cols: &[SuiteColumn]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Evaluation suite {}: {} tasks × {} checkpoints\n",
        suite.path.display(),
        suite.tasks.len(),
        cols.len()
    );
    let heads: Vec<String> = cols.iter().map(SuiteColumn::header).collect();
    let _ = writeln!(
        s,
        "| task | kind | images | metric | chance | {} |",
        heads.join(" | ")
    );
    let _ = writeln!(s, "|---|---|---:|---|---:|{}", "---:|".repeat(cols.len()));
    let mut failures = Vec::new();
    for (i, t) in suite.tasks.iter().enumerate() {
        let reference = first_ok(cols, i);
        // The footnote number of each failed cell of this task.
        let notes: Vec<Option<usize>> = cols
            .iter()
            .map(|c| {
                c.results[i].1.as_ref().err().map(|e| {
                    failures.push(format!("{} on {}: {e}", t.name, c.checkpoint));
                    failures.len()
                })
            })
            .collect();
        for (m, metric) in t.kind.metrics().iter().enumerate() {
            let chance = reference.map_or("–".into(), |f| pct(f.values[m].2));
            let images = reference.map_or("–".into(), |f| f.samples.to_string());
            let cells: Vec<String> = cols
                .iter()
                .zip(&notes)
                .map(|(c, note)| match (&c.results[i].1, note) {
                    (Ok(f), _) => pct(f.values[m].1),
                    (Err(_), n) => format!("failed [{}]", n.unwrap_or(0)),
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {images} | {metric} | {chance} | {} |",
                t.name,
                t.kind.as_str(),
                cells.join(" | ")
            );
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed tasks:");
        for (i, f) in failures.iter().enumerate() {
            let _ = writeln!(s, "[{}] {}", i + 1, f.replace('\n', " "));
        }
    }
    s
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// The suite as CSV, one row per task, metric and checkpoint (a failed task: empty value, the
/// error in the last column). Columns: task, kind, metric, checkpoint, step, value, chance,
/// images, error; values are fractions (0.5 = 50%).
pub fn suite_csv(suite: &Suite, cols: &[SuiteColumn]) -> String {
    let mut s = String::from("task,kind,metric,checkpoint,step,value,chance,images,error\n");
    for (i, t) in suite.tasks.iter().enumerate() {
        let reference = first_ok(cols, i);
        for (m, metric) in t.kind.metrics().iter().enumerate() {
            for c in cols {
                let chance = reference.map_or(String::new(), |f| f.values[m].2.to_string());
                let (value, images, error) = match &c.results[i].1 {
                    Ok(f) => (
                        f.values[m].1.to_string(),
                        f.samples.to_string(),
                        String::new(),
                    ),
                    Err(e) => (String::new(), String::new(), e.clone()),
                };
                let row = [
                    t.name.clone(),
                    t.kind.as_str().into(),
                    metric.to_string(),
                    c.checkpoint.clone(),
                    c.step.map(|n| n.to_string()).unwrap_or_default(),
                    value,
                    chance,
                    images,
                    error,
                ];
                let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
                let _ = writeln!(s, "{}", row.join(","));
            }
        }
    }
    s
}

/// The suite as JSON: `{"suite", "checkpoints": [{"checkpoint", "step"}], "tasks": [{"name",
/// "kind", "data", "split", "results": [{"checkpoint", "images", "metrics": {m: value},
/// "chance": {m: value}} or {"checkpoint", "error"}]}]}`.
pub fn suite_json(suite: &Suite, cols: &[SuiteColumn]) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let tasks: Vec<Value> = suite
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let results: Vec<Value> = cols
                .iter()
                .map(|c| match &c.results[i].1 {
                    Ok(f) => {
                        let (mut metrics, mut chance) = (Map::new(), Map::new());
                        for (m, v, ch) in &f.values {
                            metrics.insert(m.clone(), json!(v));
                            chance.insert(m.clone(), json!(ch));
                        }
                        json!({"checkpoint": c.checkpoint, "images": f.samples,
                               "metrics": metrics, "chance": chance})
                    }
                    Err(e) => json!({"checkpoint": c.checkpoint, "error": e}),
                })
                .collect();
            json!({"name": t.name, "kind": t.kind, "data": t.data, "split": t.split,
                   "results": results})
        })
        .collect();
    let checkpoints: Vec<Value> = cols
        .iter()
        .map(|c| json!({"checkpoint": c.checkpoint, "step": c.step}))
        .collect();
    json!({"suite": suite.path.display().to_string(), "checkpoints": checkpoints, "tasks": tasks})
}

/// The multilabel table: mAP against its chance level.
pub fn multilabel_markdown(r: &MultiLabelReport) -> String {
    let m = &r.metrics;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Multi-label zero-shot classification on {}: {} images, {} classes ({} with positives), \
         {} prompt templates per class\n",
        r.data, m.samples, m.classes, m.classes_with_positives, r.templates
    );
    let _ = writeln!(
        s,
        "| mean average precision | chance (mean positive rate) |"
    );
    let _ = writeln!(s, "|---:|---:|");
    let _ = writeln!(
        s,
        "| {} | {} |",
        pct(m.mean_average_precision),
        pct(m.chance_map)
    );
    if r.skipped.total() > 0 {
        let _ = writeln!(s, "Skipped samples: {} ({})", r.skipped.total(), r.skipped);
    }
    s
}

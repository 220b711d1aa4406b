//! Reading runs' `metrics.jsonl` into curves, and choosing which curves become panels.
use super::{DEFAULT_TRAIN_METRICS, PlotError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

/// Points kept per curve: a panel is a few hundred pixels wide, and a run of millions of
/// steps must not be held in memory whole, so longer curves keep every 2nd, 4th, ... point.
const MAX_POINTS: usize = 8192;

/// One metric of one run over the steps, thinned evenly past `MAX_POINTS`.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    /// (step, value); a value logged as null (a skipped step's `grad_norm`) is NaN and breaks
    /// the line.
    pub points: Vec<(f64, f64)>,
    stride: u64,
    seen: u64,
}

impl Curve {
    fn push(&mut self, step: f64, value: f64) {
        let stride = self.stride.max(1);
        if self.seen % stride == 0 {
            self.points.push((step, value));
            if self.points.len() > MAX_POINTS {
                let mut i = 0;
                self.points.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.seen += 1;
    }
}

/// A run's curves by (row kind, metric name): kinds are "train" and "eval".
#[derive(Debug, Clone)]
pub struct RunCurves {
    /// How the run is labelled in the legend (its path as given).
    pub name: String,
    pub curves: BTreeMap<(String, String), Curve>,
    /// Lines that are not a metrics row (a line cut short by a crash), skipped.
    pub skipped_lines: usize,
}

/// Reads `path`: a run folder (its `metrics.jsonl`) or a `metrics.jsonl` file.
pub fn read_run(path: &Path) -> Result<RunCurves, PlotError> {
    let file = if path.is_file() {
        path.to_path_buf()
    } else {
        path.join("metrics.jsonl")
    };
    let read_err = |source| PlotError::Read {
        path: file.clone(),
        source,
    };
    let reader = std::io::BufReader::new(std::fs::File::open(&file).map_err(read_err)?);
    let mut run = RunCurves {
        name: path.display().to_string(),
        curves: BTreeMap::new(),
        skipped_lines: 0,
    };
    for line in reader.lines() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        if !run.add_row(&line) {
            run.skipped_lines += 1;
        }
    }
    if run.skipped_lines > 0 {
        tracing::warn!(
            "{}: {} line(s) are not metrics rows and were skipped",
            file.display(),
            run.skipped_lines
        );
    }
    Ok(run)
}

impl RunCurves {
    /// Adds one `{"kind": ..., "step": ..., NAME: value, ...}` row; false when it is not one.
    fn add_row(&mut self, line: &str) -> bool {
        let Ok(serde_json::Value::Object(row)) = serde_json::from_str(line) else {
            return false;
        };
        let (Some(kind), Some(step)) = (
            row.get("kind").and_then(|k| k.as_str()),
            row.get("step").and_then(|s| s.as_f64()),
        ) else {
            return false;
        };
        for (name, value) in &row {
            if name == "kind" || name == "step" {
                continue;
            }
            let v = match value {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                serde_json::Value::Null => f64::NAN,
                _ => continue,
            };
            self.curves
                .entry((kind.to_string(), name.clone()))
                .or_default()
                .push(step, v);
        }
        true
    }
}

/// One chart: a title and a curve per run that logs it (by the run's index).
#[derive(Debug)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<(usize, Vec<(f64, f64)>)>,
}

/// The panels for `metrics` (empty = loss, lr, temperature and every eval metric); a named
/// metric that no run logs is an error listing those that exist. Panels without a single
/// finite value are left out.
pub fn panels(runs: &[RunCurves], metrics: &[String]) -> Result<Vec<Panel>, PlotError> {
    let logged: BTreeSet<&(String, String)> = runs.iter().flat_map(|r| r.curves.keys()).collect();
    let keys: Vec<(String, String)> = if metrics.is_empty() {
        let train = DEFAULT_TRAIN_METRICS
            .iter()
            .map(|m| ("train".to_string(), m.to_string()));
        let eval = logged
            .iter()
            .filter(|(k, _)| k == "eval")
            .map(|k| (*k).clone());
        train.chain(eval).collect()
    } else {
        metrics
            .iter()
            .map(|m| find(m, &logged))
            .collect::<Result<_, _>>()?
    };
    let panels: Vec<Panel> = keys
        .into_iter()
        .map(|key| Panel {
            title: if key.0 == "train" {
                key.1.clone()
            } else {
                format!("{}/{}", key.0, key.1)
            },
            lines: runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.curves.get(&key).map(|c| (i, c.points.clone())))
                .collect(),
        })
        .filter(|p| {
            p.lines
                .iter()
                .any(|(_, pts)| pts.iter().any(|(_, v)| v.is_finite()))
        })
        .collect();
    if panels.is_empty() {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        return Err(PlotError::Nothing(format!(
            "nothing to plot: {} log(s) no finite value of the chosen metrics",
            names.join(", ")
        )));
    }
    Ok(panels)
}

/// `NAME`, `train/NAME` or `eval/NAME` → the logged (kind, name), train first.
fn find(m: &str, logged: &BTreeSet<&(String, String)>) -> Result<(String, String), PlotError> {
    let wanted = match m.split_once('/') {
        Some((kind @ ("train" | "eval"), name)) => vec![(kind, name)],
        _ => vec![("train", m), ("eval", m)],
    };
    wanted
        .into_iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .find(|key| logged.contains(key))
        .ok_or_else(|| {
            let have: Vec<String> = logged
                .iter()
                .map(|(k, n)| {
                    if k == "train" {
                        n.clone()
                    } else {
                        format!("{k}/{n}")
                    }
                })
                .collect();
            PlotError::Nothing(format!(
                "--metric {m}: no run logs it; they log {}",
                have.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rows: &[&str]) -> RunCurves {
        let mut r = RunCurves {
            name: "r".into(),
            curves: BTreeMap::new(),
            skipped_lines: 0,
        };
        for row in rows {
            if !r.add_row(row) {
                r.skipped_lines += 1;
            }
        }
        r
    }

    #[test]
    fn rows_become_curves_and_a_torn_line_is_skipped() {
        let r = run(&[
            r#"{"kind":"train","step":1,"loss":2.5,"grad_norm":null,"lr":0.001}"#,
            r#"{"kind":"eval","step":1,"zeroshot_top1":0.25}"#,
            r#"{"kind":"train","step":2,"loss":2.0,"grad_norm":1.5,"lr":0.002}"#,
            r#"{"kind":"tr"#,
        ]);
        assert_eq!(r.skipped_lines, 1);
        let loss = &r.curves[&("train".into(), "loss".into())].points;
        assert_eq!(loss, &[(1.0, 2.5), (2.0, 2.0)]);
        let g = &r.curves[&("train".into(), "grad_norm".into())].points;
        assert!(g[0].1.is_nan() && g[1].1 == 1.5);
        let p = panels(&[r], &[]).unwrap();
        let titles: Vec<&str> = p.iter().map(|p| p.title.as_str()).collect();
        // No temperature was logged, so it has no panel.
        assert_eq!(titles, ["loss", "lr", "eval/zeroshot_top1"]);
    }

    #[test]
    fn named_metrics_are_found_in_either_kind_or_refused_with_what_exists() {
        let r = run(&[
            r#"{"kind":"train","step":1,"loss":2.5}"#,
            r#"{"kind":"eval","step":1,"loss":3.0}"#,
        ]);
        let rs = [r];
        let p = panels(&rs, &["eval/loss".into(), "loss".into()]).unwrap();
        assert_eq!(p[0].title, "eval/loss");
        assert_eq!(p[0].lines[0].1, [(1.0, 3.0)]);
        assert_eq!(p[1].title, "loss");
        let err = panels(&rs, &["accuracy".into()]).unwrap_err().to_string();
        assert_eq!(
            err,
            "--metric accuracy: no run logs it; they log eval/loss, loss"
        );
    }

    #[test]
    fn long_curves_are_thinned_evenly_and_stay_bounded() {
        let mut c = Curve::default();
        for s in 0..100_000u64 {
            c.push(s as f64, s as f64);
        }
        assert!(c.points.len() <= MAX_POINTS, "{}", c.points.len());
        assert!(c.points.len() > MAX_POINTS / 2);
        assert_eq!(c.points[0], (0.0, 0.0));
        let gap = c.points[1].0 - c.points[0].0;
        assert!(c.points.windows(2).all(|w| w[1].0 - w[0].0 == gap));
    }
}

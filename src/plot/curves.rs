//! Reading runs' `metrics.jsonl` into curves, and choosing which curves become panels.
use super::{DEFAULT_TRAIN_METRICS, PlotError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

/// Points kept per curve: a panel is a few hundred pixels wide, and a run of millions of
/// steps must not be held in memory whole, so longer curves keep every 2nd, 4th, ... point.
const MAX_POINTS: usize = 8192;

/// Panels drawn at most (ten rows of three): a log with thousands of evaluation metrics must not
/// become a picture of gigabytes. The metrics left out are named by [`Selection::left_out`].
pub const MAX_PANELS: usize = 30;

/// Values of larger magnitude are not drawn: the axis arithmetic (the span of a range, its 5 %
/// padding, a 1-2-5 tick step) must stay finite, and `1e308 - (-1e308)` is not. No real metric
/// comes near this bound.
pub const MAX_MAGNITUDE: f64 = 1e300;

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
    /// Values not drawn, by panel title: null (how NaN is logged), NaN or ±Infinity (as Python's
    /// json writes them) or beyond [`MAX_MAGNITUDE`]. Each breaks its line.
    pub skipped_values: BTreeMap<String, u64>,
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
        skipped_values: BTreeMap::new(),
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
    let skipped: u64 = run.skipped_values.values().sum();
    if skipped > 0 {
        tracing::warn!(
            "{}: {skipped} value(s) are null, NaN, infinite or beyond ±{MAX_MAGNITUDE:e} and \
             were not drawn ({})",
            file.display(),
            counts(&run.skipped_values)
        );
    }
    Ok(run)
}

/// `loss: 2, grad_norm: 1`: the largest counts first, at most a few named.
fn counts(by_name: &BTreeMap<String, u64>) -> String {
    const SHOWN: usize = 5;
    let mut v: Vec<(&String, &u64)> = by_name.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = v
        .iter()
        .take(SHOWN)
        .map(|(n, c)| format!("{n}: {c}"))
        .collect();
    if v.len() > SHOWN {
        parts.push(format!("{} more metrics", v.len() - SHOWN));
    }
    parts.join(", ")
}

/// The panel title of a (kind, name) key: train metrics by name, others as `kind/name`.
fn title((kind, name): &(String, String)) -> String {
    if kind == "train" {
        name.clone()
    } else {
        format!("{kind}/{name}")
    }
}

/// `line` with the bare `NaN`, `Infinity` and `-Infinity` that Python's `json` writes (not JSON,
/// so the row would be refused whole) as `null`; `None` when there are none outside strings.
fn python_nonfinite_as_null(line: &str) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            if let Some(word) = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|w| rest.starts_with(w))
            {
                out.push_str("null");
                rest = &rest[word.len()..];
                changed = true;
                continue;
            }
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

impl RunCurves {
    /// Adds one `{"kind": ..., "step": ..., NAME: value, ...}` row; false when it is not one.
    fn add_row(&mut self, line: &str) -> bool {
        let parsed = serde_json::from_str(line).or_else(|e| {
            python_nonfinite_as_null(line).map_or(Err(e), |l| serde_json::from_str(&l))
        });
        let Ok(serde_json::Value::Object(row)) = parsed else {
            return false;
        };
        let (Some(kind), Some(step)) = (
            row.get("kind").and_then(|k| k.as_str()),
            row.get("step").and_then(|s| s.as_f64()),
        ) else {
            return false;
        };
        // A step beyond the bound would break the x axis as a value breaks the y axis.
        if step.abs() > MAX_MAGNITUDE {
            return false;
        }
        for (name, value) in &row {
            if name == "kind" || name == "step" {
                continue;
            }
            let v = match value {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::Null => None,
                _ => continue,
            };
            let key = (kind.to_string(), name.clone());
            let v = match v {
                Some(v) if v.abs() <= MAX_MAGNITUDE => v,
                _ => {
                    *self.skipped_values.entry(title(&key)).or_default() += 1;
                    f64::NAN
                }
            };
            self.curves.entry(key).or_default().push(step, v);
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

/// The panels to draw, at most [`MAX_PANELS`], and the titles of the metrics left out.
#[derive(Debug)]
pub struct Selection {
    pub panels: Vec<Panel>,
    /// Metrics that would have had a panel past the bound: the least logged and least recent
    /// evaluation metrics by default, the last named ones with `--metric`.
    pub left_out: Vec<String>,
}

/// The panels for `metrics` (empty = loss, lr, temperature and every eval metric); a named
/// metric that no run logs is an error listing those that exist. Panels without a single
/// finite value are left out; past [`MAX_PANELS`], the default eval panels are those with the
/// most values, then the most recent.
pub fn panels(runs: &[RunCurves], metrics: &[String]) -> Result<Selection, PlotError> {
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
    let finite = |key: &(String, String)| {
        let pts = runs.iter().filter_map(|r| r.curves.get(key));
        pts.flat_map(|c| c.points.iter())
            .filter(|(_, v)| v.is_finite())
            .fold((0u64, f64::NEG_INFINITY), |(n, last), &(s, _)| {
                (n + 1, last.max(s))
            })
    };
    let keys: Vec<((String, String), (u64, f64))> = keys
        .into_iter()
        .map(|k| {
            let f = finite(&k);
            (k, f)
        })
        .filter(|(_, (n, _))| *n > 0)
        .collect();
    if keys.is_empty() {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        return Err(PlotError::Nothing(format!(
            "nothing to plot: {} log(s) no finite value of the chosen metrics",
            names.join(", ")
        )));
    }
    let mut keep = vec![true; keys.len()];
    let mut left_out = Vec::new();
    if keys.len() > MAX_PANELS {
        // Named metrics keep the order given; by default the train panels stay and the eval
        // metrics compete on how often, then how recently, they were logged.
        let mut rank: Vec<usize> = (0..keys.len()).collect();
        if metrics.is_empty() {
            let eval = |i: usize| keys[i].0.0 != "train";
            rank.sort_by(|&a, &b| {
                let ((na, la), (nb, lb)) = (keys[a].1, keys[b].1);
                (eval(a).cmp(&eval(b)))
                    .then(nb.cmp(&na))
                    .then(lb.total_cmp(&la))
                    .then(a.cmp(&b))
            });
        }
        for &i in &rank[MAX_PANELS..] {
            keep[i] = false;
            left_out.push(title(&keys[i].0));
        }
    }
    let panels = keys
        .into_iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|((key, _), _)| Panel {
            title: title(&key),
            lines: runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.curves.get(&key).map(|c| (i, c.points.clone())))
                .collect(),
        })
        .collect();
    Ok(Selection { panels, left_out })
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
            // A log of thousands of metrics must not make a message of megabytes.
            const SHOWN: usize = 40;
            let mut have: Vec<String> = logged.iter().take(SHOWN).map(|k| title(k)).collect();
            if logged.len() > SHOWN {
                have.push(format!("and {} more", logged.len() - SHOWN));
            }
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
            skipped_values: BTreeMap::new(),
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
        let p = panels(&[r], &[]).unwrap().panels;
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
        let p = panels(&rs, &["eval/loss".into(), "loss".into()])
            .unwrap()
            .panels;
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

    #[test]
    fn thousands_of_metrics_are_bounded_to_the_most_logged_and_the_rest_named() {
        let mut rows = vec![r#"{"kind":"train","step":1,"loss":2.5}"#.to_string()];
        rows.extend((0..12_000).map(|i| format!(r#"{{"kind":"eval","step":10,"m{i:05}":0.5}}"#)));
        // The most often logged, then the most recent, win the eval panels.
        for step in [20, 30] {
            rows.push(format!(r#"{{"kind":"eval","step":{step},"m00007":0.6}}"#));
        }
        rows.push(r#"{"kind":"eval","step":40,"m11999":0.6}"#.into());
        let r = run(&rows.iter().map(String::as_str).collect::<Vec<_>>());
        let rs = [r];
        let s = panels(&rs, &[]).unwrap();
        assert_eq!(s.panels.len(), MAX_PANELS);
        let titles: Vec<&str> = s.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles[..3], ["loss", "eval/m00000", "eval/m00001"]);
        assert!(titles.contains(&"eval/m00007") && titles.contains(&"eval/m11999"));
        assert_eq!(s.left_out.len(), 12_001 - MAX_PANELS);
        assert!(!s.left_out.iter().any(|t| titles.contains(&t.as_str())));
        // Named metrics past the bound: the first ones named are drawn.
        let named: Vec<String> = (0..40).map(|i| format!("eval/m{i:05}")).collect();
        let s = panels(&rs, &named).unwrap();
        assert_eq!(s.panels.len(), MAX_PANELS);
        assert_eq!(s.left_out, named[MAX_PANELS..]);
        // An unknown name lists a bounded sample of what exists.
        let err = panels(&rs, &["nope".into()]).unwrap_err().to_string();
        assert!(err.len() < 1000 && err.ends_with("and 11961 more"), "{err}");
    }

    #[test]
    fn values_too_large_to_draw_or_not_finite_are_skipped_and_counted() {
        let r = run(&[
            r#"{"kind":"train","step":1,"loss":2.5,"lr":0.1}"#,
            r#"{"kind":"train","step":2,"loss":1e308}"#,
            r#"{"kind":"train","step":3,"loss":-1e308}"#,
            r#"{"kind":"train","step":4,"loss":NaN,"lr":-Infinity,"tag":"NaN \"Infinity\""}"#,
            r#"{"kind":"train","step":5,"loss":null}"#,
            r#"{"kind":"train","step":6,"loss":2.0,"lr":Infinity}"#,
            r#"{"kind":"train","step":1e308,"loss":2.0}"#,
        ]);
        assert_eq!(r.skipped_lines, 1, "a step beyond the bound is no row");
        assert_eq!(r.skipped_values["loss"], 4);
        assert_eq!(r.skipped_values["lr"], 2);
        assert_eq!(counts(&r.skipped_values), "loss: 4, lr: 2");
        let loss = &r.curves[&("train".into(), "loss".into())].points;
        let drawn: Vec<_> = loss.iter().filter(|p| p.1.is_finite()).collect();
        assert_eq!(drawn, [&(1.0, 2.5), &(6.0, 2.0)]);
        assert_eq!(loss.len(), 6, "the skipped values break the line");
        assert_eq!(
            python_nonfinite_as_null(r#"{"a":NaN,"b":"NaN \"-Infinity\"","c":-Infinity}"#).unwrap(),
            r#"{"a":null,"b":"NaN \"-Infinity\"","c":null}"#
        );
        assert_eq!(python_nonfinite_as_null(r#"{"a":"NaN"}"#), None);
    }
}

//! Where training metrics go: `metrics.jsonl`, TensorBoard event files and the terminal.
//!
//! Logging must never kill a run: `tensorboard-rs` panics on any I/O error, so every call into
//! it is wrapped, and after the first failure TensorBoard logging is switched off with a warning
//! while `metrics.jsonl` and the terminal carry on.
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// One metric's value. Counts stay integers wherever they are shown (`skipped_samples 3`, not
/// `3.0000`); TensorBoard stores every scalar as a float anyway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Count(u64),
    Real(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Count(n) => n as f64,
            Value::Real(v) => v,
        }
    }

    fn json(self) -> serde_json::Value {
        match self {
            Value::Count(n) => n.into(),
            Value::Real(v) => {
                serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
            }
        }
    }

    /// Four decimals in the usual range, scientific notation outside it.
    fn short(self) -> String {
        match self {
            Value::Count(n) => n.to_string(),
            Value::Real(v) if v == 0.0 || (1e-3..1e5).contains(&v.abs()) => format!("{v:.4}"),
            Value::Real(v) => format!("{v:.3e}"),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Count(n)
    }
}

/// One row of metrics at a step, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(BTreeMap<String, Value>);

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value` (an `f64` is a measurement, a `u64` a count).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).copied()
    }

    /// Every metric, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

pub struct MetricsLog {
    jsonl: Option<std::fs::File>,
    jsonl_path: PathBuf,
    tb: Option<tensorboard_rs::summary_writer::SummaryWriter>,
    bar: Option<ProgressBar>,
    /// Nothing is written or printed (ranks other than 0 of a multi-process job).
    silent: bool,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` (appending, so a resumed run continues the file, after
    /// dropping the rows of steps after `start_step` that the run is about to redo), the
    /// TensorBoard writer in `run_dir/tb` when `tensorboard`, and a progress bar over
    /// `total_steps` when `bar` (plain log lines otherwise).
    pub fn open(
        run_dir: &Path,
        tensorboard: bool,
        bar: bool,
        start_step: u64,
        total_steps: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let jsonl_path = run_dir.join("metrics.jsonl");
        let dropped = keep_rows_up_to(&jsonl_path, start_step)?;
        if dropped > 0 {
            tracing::info!(
                "{}: dropped {dropped} rows after step {start_step}, which this run redoes",
                jsonl_path.display()
            );
        }
        let jsonl = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&jsonl_path)?,
        );
        let tb = if tensorboard {
            let dir = run_dir.join("tb");
            match catch_unwind(AssertUnwindSafe(|| {
                tensorboard_rs::summary_writer::SummaryWriter::new(&dir)
            })) {
                Ok(w) => Some(w),
                Err(_) => {
                    tracing::warn!(
                        "cannot write TensorBoard events in {}; continuing without them",
                        dir.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let bar = bar.then(|| {
            let b = ProgressBar::new(total_steps);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            b.set_position(start_step);
            b
        });
        Ok(Self {
            jsonl,
            jsonl_path,
            tb,
            bar,
            silent: false,
        })
    }

    /// A log that records nothing: in a multi-process job only rank 0 logs.
    pub fn silent() -> Self {
        Self {
            jsonl: None,
            jsonl_path: PathBuf::new(),
            tb: None,
            bar: None,
            silent: true,
        }
    }

    /// Whether a progress bar fits: `progress = "auto"` means a bar on a terminal only.
    pub fn want_bar(progress: crate::config::Progress) -> bool {
        match progress {
            crate::config::Progress::Bar => true,
            crate::config::Progress::Plain => false,
            crate::config::Progress::Auto => std::io::stderr().is_terminal(),
        }
    }

    /// Records `metrics` at `step` everywhere; `kind` groups them ("train", "eval").
    pub fn log(&mut self, kind: &str, step: u64, metrics: &Metrics) {
        if self.silent {
            return;
        }
        let mut row = serde_json::Map::new();
        row.insert("kind".into(), kind.into());
        row.insert("step".into(), step.into());
        for (k, v) in metrics.iter() {
            row.insert(k.to_string(), v.json());
        }
        if let Some(f) = self.jsonl.as_mut()
            && writeln!(f, "{}", serde_json::Value::Object(row))
                .and_then(|_| f.flush())
                .is_err()
        {
            tracing::warn!(
                "cannot append to {}; metrics.jsonl logging stops",
                self.jsonl_path.display()
            );
            self.jsonl = None;
        }
        if let Some(tb) = self.tb.as_mut() {
            let ok = catch_unwind(AssertUnwindSafe(|| {
                for (k, v) in metrics.iter() {
                    tb.add_scalar(&format!("{kind}/{k}"), v.as_f64() as f32, step as usize);
                }
            }))
            .is_ok();
            if !ok {
                tracing::warn!("TensorBoard writer failed; continuing without TensorBoard events");
                self.tb = None;
            }
        }
        let line = metrics
            .iter()
            .map(|(k, v)| format!("{k} {}", v.short()))
            .collect::<Vec<_>>()
            .join("  ");
        match &self.bar {
            Some(b) if kind == "train" => {
                b.set_position(step);
                b.set_message(line);
            }
            Some(b) => b.println(format!("[{kind} @ {step}] {line}")),
            None => tracing::info!("{kind} step {step}: {line}"),
        }
    }

    /// Prints a line without breaking the progress bar.
    pub fn println(&self, line: &str) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Flushes files and ends the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(mut tb) = self.tb.take() {
            // The writer flushes asynchronously; dropping it is what guarantees the data is on disk.
            let _ = catch_unwind(AssertUnwindSafe(move || {
                tb.flush();
                drop(tb);
            }));
        }
    }
}

/// Rewrites `path` (through a temporary file and a rename) without the rows of steps after
/// `step` and without a line cut short by a killed process; returns how many rows went.
/// `log.sample_keys`: one rank's sample keys per step, one JSON line per step
/// (`{"step": 12, "rank": 0, "keys": [...]}`) in `sample_keys.rank<R>.jsonl`. A resumed run
/// drops the rows after its checkpoint's step, as `metrics.jsonl` does.
pub struct SampleKeysLog {
    file: std::fs::File,
    path: PathBuf,
    rank: usize,
}

impl SampleKeysLog {
    pub fn open(run_dir: &Path, rank: usize, start_step: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let path = run_dir.join(format!("sample_keys.rank{rank}.jsonl"));
        keep_rows_up_to(&path, start_step)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self { file, path, rank })
    }

    /// Appends the keys of this rank's samples of `step`; a failed write is logged and does not
    /// stop training (the record is an audit aid, not part of the run).
    pub fn record(&mut self, step: u64, keys: &[String]) {
        let row = serde_json::json!({"step": step, "rank": self.rank, "keys": keys});
        if let Err(e) = writeln!(self.file, "{row}") {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }
}

fn keep_rows_up_to(path: &Path, step: u64) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        other => other?,
    };
    let keep = |line: &&str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|row| row.get("step")?.as_u64())
            .is_some_and(|s| s <= step)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    let dropped = text.lines().count() - kept.len();
    if dropped == 0 && (text.is_empty() || text.ends_with('\n')) {
        return Ok(0);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".tmp-{name}"));
    let mut file = std::fs::File::create(&tmp)?;
    for line in kept {
        writeln!(file, "{line}")?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(dropped)
}

impl Drop for MetricsLog {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_at_a_step_drops_the_rows_after_it_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let rows = [1, 2, 2, 3, 4].map(|s| format!(r#"{{"kind":"train","step":{s}}}"#));
        std::fs::write(&path, rows.join("\n") + "\n{\"kind\":\"tr").unwrap();
        let mut log = MetricsLog::open(dir.path(), false, false, 2, 10).unwrap();
        let mut m = Metrics::new();
        m.insert("loss", 1.5);
        log.log("train", 3, &m);
        let text = std::fs::read_to_string(&path).unwrap();
        let steps: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, [1, 2, 2, 3], "{text}");
        assert!(!dir.path().join(".tmp-metrics.jsonl").exists());
    }
}

//! Evaluation suites: a TOML file of tasks (a dataset folder, what to measure on it, options),
//! run against one model at a time. `cliptrain eval suite` runs one against several
//! checkpoints and prints one table; `[eval] suite` runs it during training.
//!
//! ```toml
//! [[task]]
//! name = "cifar10"                 # letters, digits, - _ . (it names metrics: suite/cifar10/top1)
//! kind = "zeroshot"                # "zeroshot" | "retrieval" | "multilabel"
//! data = "wds_cifar10"             # relative paths resolve against the suite file's folder
//! split = "test"                   # CLIP_benchmark split; default "test"
//! classnames = "builtin:cifar10"   # optional: a file or builtin:NAME; default: the folder's
//! templates = "builtin:cifar10"    # optional: the same; default: the folder's, else ours
//! ```
//!
//! A task that fails (missing folder, bad labels) is reported as failed in its cell; the others
//! still run.
use super::batches::EvalImages;
use super::metrics::RECALL_AT;
use super::prompts::BUILTIN_PREFIX;
use super::zeroshot::ZeroShotTask;
use super::{Encoder, EvalError, retrieval};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a task measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Single-label zero-shot classification: top-1, top-5, mean per-class recall.
    Zeroshot,
    /// Image↔text retrieval: Recall@1 and @5 both ways.
    Retrieval,
    /// Multi-label zero-shot classification: mean average precision.
    Multilabel,
}

impl TaskKind {
    /// The figures a task of this kind reports, in table order.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            TaskKind::Zeroshot => &["top1", "top5", "mean_per_class_recall"],
            TaskKind::Retrieval => &[
                "image_to_text_recall@1",
                "image_to_text_recall@5",
                "text_to_image_recall@1",
                "text_to_image_recall@5",
            ],
            TaskKind::Multilabel => &["mean_average_precision"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Zeroshot => "zeroshot",
            TaskKind::Retrieval => "retrieval",
            TaskKind::Multilabel => "multilabel",
        }
    }
}

/// One `[[task]]` of a suite file, paths resolved against the file's folder.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    pub data: String,
    #[serde(default = "default_split")]
    pub split: String,
    #[serde(default)]
    pub classnames: Option<String>,
    #[serde(default)]
    pub templates: Option<String>,
}

fn default_split() -> String {
    "test".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    task: Vec<TaskSpec>,
}

/// A suite file, read and checked.
#[derive(Debug, Clone)]
pub struct Suite {
    pub path: PathBuf,
    pub tasks: Vec<TaskSpec>,
}

/// What one task gave for one model: its figures (with the chance level of each), or why it
/// failed.
#[derive(Debug, Clone, Serialize)]
pub struct TaskFigures {
    /// Images scored.
    pub samples: usize,
    /// `(metric, value, chance)`, in [`TaskKind::metrics`] order.
    pub values: Vec<(String, f64, f64)>,
}

/// The outcome of every task of a suite for one model, in suite order.
pub type SuiteResults = Vec<(String, Result<TaskFigures, String>)>;

impl Suite {
    /// Reads and checks `path`: the TOML shape, unique names, options that fit the kind.
    /// Whether the data folders exist is checked when each task runs, so that one missing
    /// folder fails only its own cells.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let bad = |m: String| EvalError::Input(format!("suite {}: {m}", path.display()));
        let text = std::fs::read_to_string(path)
            .map_err(|e| EvalError::Input(format!("reading suite {}: {e}", path.display())))?;
        let file: SuiteFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.task.is_empty() {
            return Err(bad(
                "no [[task]]; each task needs name, kind (zeroshot|retrieval|multilabel) and data"
                    .into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &str| -> String {
            if p.starts_with(BUILTIN_PREFIX) || Path::new(p).is_absolute() {
                p.to_string()
            } else {
                base.join(p).display().to_string()
            }
        };
        let mut names = std::collections::HashSet::new();
        let mut tasks = Vec::new();
        for mut t in file.task {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if t.name.is_empty() || !t.name.chars().all(ok_char) {
                return Err(bad(format!(
                    "task name \"{}\": use letters, digits, '-', '_' or '.' (it names the metrics)",
                    t.name
                )));
            }
            if !names.insert(t.name.clone()) {
                return Err(bad(format!("task name \"{}\" is used twice", t.name)));
            }
            if t.data.is_empty() {
                return Err(bad(format!("task \"{}\": data is empty", t.name)));
            }
            if t.kind == TaskKind::Retrieval && (t.classnames.is_some() || t.templates.is_some()) {
                return Err(bad(format!(
                    "task \"{}\": retrieval uses the captions; remove classnames/templates",
                    t.name
                )));
            }
            t.data = resolve(&t.data);
            t.classnames = t.classnames.as_deref().map(resolve);
            t.templates = t.templates.as_deref().map(resolve);
            tasks.push(t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            tasks,
        })
    }

    /// Runs every task with `enc`; a failing task is recorded and the next one runs.
    pub fn run(&self, enc: &Encoder, prep: &EvalImages) -> SuiteResults {
        self.tasks
            .iter()
            .map(|t| {
                let r = run_task(t, enc, prep).map_err(|e| e.to_string());
                if let Err(e) = &r {
                    tracing::warn!("suite task {}: {e}", t.name);
                }
                (t.name.clone(), r)
            })
            .collect()
    }
}

fn run_task(t: &TaskSpec, enc: &Encoder, prep: &EvalImages) -> Result<TaskFigures, EvalError> {
    let task = || {
        ZeroShotTask::resolve(
            &t.data,
            &t.split,
            t.classnames.as_deref(),
            t.templates.as_deref(),
            None,
        )
    };
    match t.kind {
        TaskKind::Zeroshot => {
            let r = task()?.run(enc, prep)?;
            let c = r.metrics.classes as f64;
            Ok(TaskFigures {
                samples: r.metrics.samples as usize,
                values: vec![
                    ("top1".into(), r.metrics.top1, 1.0 / c),
                    ("top5".into(), r.metrics.top5, c.min(5.0) / c),
                    (
                        "mean_per_class_recall".into(),
                        r.metrics.mean_per_class_recall,
                        1.0 / c,
                    ),
                ],
            })
        }
        TaskKind::Multilabel => {
            let z = task()?;
            if z.bench.is_none() {
                return Err(EvalError::Input(format!(
                    "{}: multilabel tasks read CLIP_benchmark folders",
                    t.data
                )));
            }
            let r = z.run_multilabel(enc, prep)?;
            Ok(TaskFigures {
                samples: r.metrics.samples,
                values: vec![(
                    "mean_average_precision".into(),
                    r.metrics.mean_average_precision,
                    r.metrics.chance_map,
                )],
            })
        }
        TaskKind::Retrieval => {
            let r = retrieval::run(&t.data, &t.split, enc, prep)?;
            let n = r.metrics.images as f64;
            let mut values = Vec::new();
            for (dir, m) in [
                ("image_to_text", &r.metrics.image_to_text),
                ("text_to_image", &r.metrics.text_to_image),
            ] {
                for k in RECALL_AT.iter().filter(|&&k| k <= 5) {
                    let key = format!("recall@{k}");
                    // A random ranking finds an image's match in its top k about k/N of the
                    // time (exactly, for text → image).
                    values.push((format!("{dir}_{key}"), m[&key], (*k as f64).min(n) / n));
                }
            }
            Ok(TaskFigures {
                samples: r.metrics.images,
                values,
            })
        }
    }
}

/// Flat metric names for metrics.jsonl and TensorBoard: `suite/<task>/<metric>` (`@` written
/// `_at_`, as the other evaluation metrics).
pub fn metric_name(task: &str, metric: &str) -> String {
    format!("suite/{task}/{}", metric.replace('@', "_at_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Suite, EvalError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, text).unwrap();
        Suite::load(&p).map(|mut s| {
            // Paths relative to the file's folder, builtins left alone.
            for t in &mut s.tasks {
                t.data = t.data.replace(&dir.path().display().to_string(), "DIR");
            }
            s
        })
    }

    #[test]
    fn suite_files_resolve_paths_and_refuse_mistakes() {
        let s = load(
            "[[task]]\nname = \"c10\"\nkind = \"zeroshot\"\ndata = \"wds/c10\"\n\
             classnames = \"builtin:cifar10\"\n[[task]]\nname = \"f\"\nkind = \"retrieval\"\n\
             data = \"/abs/flickr\"\nsplit = \"val\"\n",
        )
        .unwrap();
        assert_eq!(s.tasks[0].data, "DIR/wds/c10");
        assert_eq!(s.tasks[0].split, "test");
        assert_eq!(s.tasks[0].classnames.as_deref(), Some("builtin:cifar10"));
        assert_eq!(
            (s.tasks[1].data.as_str(), s.tasks[1].split.as_str()),
            ("/abs/flickr", "val")
        );
        let err = |t: &str| load(t).unwrap_err().to_string();
        assert!(err("").contains("no [[task]]"));
        assert!(err("[[task]]\nname=\"a\"\nkind=\"linear\"\ndata=\"d\"").contains("linear"));
        assert!(
            err("[[task]]\nname=\"a\"\nkind=\"zeroshot\"\ndata=\"d\"\n[[task]]\nname=\"a\"\nkind=\"zeroshot\"\ndata=\"e\"")
                .contains("used twice")
        );
        assert!(err("[[task]]\nname=\"a b\"\nkind=\"zeroshot\"\ndata=\"d\"").contains("letters"));
        assert!(
            err("[[task]]\nname=\"r\"\nkind=\"retrieval\"\ndata=\"d\"\ntemplates=\"t.txt\"")
                .contains("remove classnames/templates")
        );
        assert!(
            err("[[task]]\nname=\"a\"\nkind=\"zeroshot\"\ndata=\"d\"\nspilt=\"x\"")
                .contains("spilt")
        );
        assert_eq!(
            metric_name("f", "image_to_text_recall@1"),
            "suite/f/image_to_text_recall_at_1"
        );
    }
}

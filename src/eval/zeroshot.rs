//! Zero-shot classification as in the CLIP paper: each class's prompt embeddings (one per
//! template) are normalised, averaged and renormalised into a classifier row; images are
//! scored by cosine similarity against every row.
use super::batches::{EvalBatches, EvalImages, Want};
use super::benchmark::{BenchmarkSet, SetKind, is_benchmark_dir};
use super::metrics::{DEFAULT_CONFUSION_MAX_CLASSES, LabelGroup, ZeroShotMetrics, ZeroShotTally};
use super::{Encoder, EvalError, prompts};
use serde::Serialize;
use std::path::Path;
use tch::Tensor;

/// Our own generic photo templates, used when no templates file is given.
pub const DEFAULT_TEMPLATES: [&str; 6] = [
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a {}.",
];

/// A zero-shot task: the classes, their prompts and optional label groups.
#[derive(Debug, Clone)]
pub struct ZeroShotTask {
    pub data: String,
    pub classnames: Vec<String>,
    pub templates: Vec<String>,
    /// Classes of the subset file; reported as "seen", the rest as "held_out".
    pub subset: Option<Vec<usize>>,
    /// The CLIP_benchmark split `data` names, when it is such a folder.
    pub bench: Option<BenchmarkSet>,
    /// The report keeps the dense confusion matrix up to this many classes (it grows as
    /// classes²); above, only the pairs that occurred.
    pub confusion_max_classes: usize,
}

/// A finished zero-shot evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotReport {
    #[serde(flatten)]
    pub metrics: ZeroShotMetrics,
    pub data: String,
    pub templates: usize,
    pub skipped: crate::data::SkipCounts,
}

impl ZeroShotTask {
    /// The task on `data` (shards, an ImageFolder or a CLIP_benchmark folder, whose `split` is
    /// read). Class names and templates are `builtin:NAME` or files; when not given they come
    /// from a CLIP_benchmark folder's own files, and templates fall back to our generic set.
    pub fn resolve(
        data: &str,
        split: &str,
        classnames: Option<&str>,
        templates: Option<&str>,
        subset: Option<&Path>,
    ) -> Result<Self, EvalError> {
        let bench = if is_benchmark_dir(Path::new(data)) {
            let set = BenchmarkSet::open(Path::new(data), split)?;
            if set.kind == SetKind::Retrieval {
                return Err(EvalError::Input(format!(
                    "{data}: dataset_type.txt says retrieval; evaluate it with `cliptrain eval \
                     retrieval` (or kind = \"retrieval\" in a suite)"
                )));
            }
            Some(set)
        } else {
            None
        };
        let classnames = match (classnames, &bench) {
            (Some(spec), _) => prompts::classnames(spec)?,
            (
                None,
                Some(BenchmarkSet {
                    classnames: Some(c),
                    ..
                }),
            ) => c.clone(),
            (None, Some(set)) => {
                return Err(EvalError::Input(format!(
                    "{} has no classnames.txt; give class names (a file or builtin:NAME, see \
                     `cliptrain eval builtins`)",
                    set.root.display()
                )));
            }
            (None, None) if Path::new(data).is_dir() => {
                return Err(EvalError::Input(format!(
                    "{data}: give class names (a file, one per line, or builtin:NAME); only \
                     CLIP_benchmark folders bring their own"
                )));
            }
            (None, None) => {
                return Err(EvalError::Input(format!(
                    "{data}: not a folder; a CLIP_benchmark folder or ImageFolder must exist, and \
                     shards need class names (a file or builtin:NAME)"
                )));
            }
        };
        let templates = match (templates, bench.as_ref().and_then(|b| b.templates.as_ref())) {
            (Some(spec), _) => prompts::templates(spec)?,
            (None, Some(t)) => {
                if let Some(bad) = t.iter().find(|t| !t.contains("{}")) {
                    return Err(EvalError::Input(format!(
                        "{data}/zeroshot_classification_templates.txt: template \"{bad}\" has no \
                         {{c}} where the class name goes"
                    )));
                }
                t.clone()
            }
            (None, None) => DEFAULT_TEMPLATES.map(String::from).to_vec(),
        };
        let subset = match subset {
            Some(p) => {
                let names = prompts::read_lines(p, "class name")?;
                let mut idx = Vec::new();
                for name in names {
                    let i = classnames.iter().position(|c| *c == name).ok_or_else(|| {
                        EvalError::Input(format!(
                            "{}: class \"{name}\" is not in the classnames file",
                            p.display()
                        ))
                    })?;
                    idx.push(i);
                }
                Some(idx)
            }
            None => None,
        };
        Ok(Self {
            data: bench
                .as_ref()
                .map(BenchmarkSet::describe)
                .unwrap_or_else(|| data.to_string()),
            classnames,
            templates,
            subset,
            bench,
            confusion_max_classes: DEFAULT_CONFUSION_MAX_CLASSES,
        })
    }

    /// Whether the set's samples carry several labels each (`dataset_type.txt` = multilabel):
    /// such a set is scored with [`ZeroShotTask::run_multilabel`].
    pub fn is_multilabel(&self) -> bool {
        self.bench
            .as_ref()
            .is_some_and(|b| b.kind == SetKind::Multilabel)
    }

    /// The batches of this task's data.
    pub(crate) fn batches(
        &self,
        want: Want,
        enc: &Encoder,
        prep: &EvalImages,
    ) -> Result<EvalBatches, EvalError> {
        match &self.bench {
            Some(set) => EvalBatches::benchmark(set, want, self.classnames.len(), prep),
            None => EvalBatches::open(&self.data, want, prep, &self.classnames, enc.tokenizer()),
        }
    }

    fn groups(&self) -> Vec<LabelGroup> {
        let Some(seen) = &self.subset else {
            return vec![];
        };
        let held: Vec<usize> = (0..self.classnames.len())
            .filter(|i| !seen.contains(i))
            .collect();
        let mut groups = vec![LabelGroup {
            name: "seen".into(),
            classes: seen.clone(),
        }];
        if !held.is_empty() {
            groups.push(LabelGroup {
                name: "held_out".into(),
                classes: held,
            });
        }
        groups
    }

    /// The `[classes, dim]` classifier: per class, the renormalised mean of its normalised
    /// prompt embeddings. Computed once per evaluation.
    pub fn classifier(&self, enc: &Encoder) -> Result<Tensor, EvalError> {
        let prompts: Vec<String> = self
            .classnames
            .iter()
            .flat_map(|c| self.templates.iter().map(move |t| t.replace("{}", c)))
            .collect();
        let emb = enc.texts(&prompts)?; // normalised, [C*T, D]
        let (c, t) = (self.classnames.len() as i64, self.templates.len() as i64);
        let mean = emb.view([c, t, -1]).mean_dim(1, false, tch::Kind::Float);
        Ok(crate::model::l2_normalize(&mean))
    }

    /// Scores every image of the set against the classifier.
    pub fn run(&self, enc: &Encoder, prep: &EvalImages) -> Result<ZeroShotReport, EvalError> {
        let classifier = self.classifier(enc)?;
        let c = self.classnames.len();
        if self.is_multilabel() {
            return Err(EvalError::Input(format!(
                "{}: dataset_type.txt says multilabel; it is scored by mean average precision \
                 (`cliptrain eval zeroshot` does so itself, a suite needs kind = \"multilabel\")",
                self.data
            )));
        }
        let mut batches = self.batches(Want::Labels, enc, prep)?;
        let mut tally = ZeroShotTally::new(c, self.groups());
        let pixels = prep.pixel_norm(enc.device());
        while let Some(b) = batches.next_batch()? {
            if let Some((key, bad)) = b
                .keys
                .iter()
                .zip(&b.labels)
                .find(|(_, l)| **l < 0 || **l as usize >= c)
            {
                return Err(EvalError::Input(format!(
                    "{}: sample {key} has label {bad}, but the classnames file lists {c} classes \
                     (labels 0..{}); use the classnames file the set was made with",
                    self.data,
                    c - 1
                )));
            }
            let scores = enc.images(&b.images, &pixels)?.matmul(&classifier.tr());
            tally.add(&scores, &b.labels);
        }
        let metrics = tally.finish(&self.classnames, self.confusion_max_classes);
        if metrics.samples == 0 {
            return Err(EvalError::Input(format!(
                "{}: no usable labelled sample (skipped: {})",
                self.data,
                batches.skipped()
            )));
        }
        Ok(ZeroShotReport {
            metrics,
            data: self.data.clone(),
            templates: self.templates.len(),
            skipped: batches.skipped().clone(),
        })
    }
}

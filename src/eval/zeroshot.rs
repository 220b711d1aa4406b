//! Zero-shot classification as in the CLIP paper: each class's prompt embeddings (one per
//! template) are normalised, averaged and renormalised into a classifier row; images are
//! scored by cosine similarity against every row.
use super::metrics::{LabelGroup, ZeroShotMetrics, ZeroShotTally};
use super::source::{EvalBatches, EvalImages, Want};
use super::{Encoder, EvalError};
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
    /// Reads the class, template and subset files (`templates`/`subset` may be empty).
    pub fn from_files(
        data: &str,
        classnames: &Path,
        templates: Option<&Path>,
        subset: Option<&Path>,
    ) -> Result<Self, EvalError> {
        let classnames = read_lines(classnames, "class name")?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = classnames.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(EvalError::Input(format!(
                "class \"{dup}\" appears twice in the classnames file; labels index its lines, so each class must be listed once"
            )));
        }
        let templates = match templates {
            Some(p) => {
                let t = read_lines(p, "template")?;
                if let Some((i, bad)) = t.iter().enumerate().find(|(_, t)| !t.contains("{}")) {
                    return Err(EvalError::Input(format!(
                        "{} line {}: template \"{bad}\" has no {{}} where the class name goes",
                        p.display(),
                        i + 1
                    )));
                }
                t
            }
            None => DEFAULT_TEMPLATES.map(String::from).to_vec(),
        };
        let subset = match subset {
            Some(p) => {
                let names = read_lines(p, "class name")?;
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
            data: data.to_string(),
            classnames,
            templates,
            subset,
        })
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
        let mut batches = EvalBatches::open(
            &self.data,
            Want::Labels,
            prep,
            &self.classnames,
            enc.tokenizer(),
        )?;
        let mut tally = ZeroShotTally::new(c, self.groups());
        let pixels = prep.pixel_norm(enc.device);
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
        let metrics = tally.finish(&self.classnames);
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

/// Non-empty trimmed lines; a blank line in the middle is an error because line numbers are
/// class indices.
fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Input(format!("reading {}: {e}", path.display())))?;
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
        return Err(EvalError::Input(format!(
            "{} line {}: empty; put one {what} per line with no blank lines",
            path.display(),
            i + 1
        )));
    }
    if lines.is_empty() {
        return Err(EvalError::Input(format!(
            "{} is empty: it needs one {what} per line",
            path.display()
        )));
    }
    Ok(lines.iter().map(|l| l.trim().to_string()).collect())
}

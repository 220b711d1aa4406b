//! The numbers evaluation reports, from scores alone: no model, no data. Zero-shot
//! classification is tallied batch by batch (top-k, per class, confusion, label groups);
//! retrieval recall is computed from a similarity matrix in slices.
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use tch::{Kind, Tensor};

/// Classes up to which the full `[true][predicted]` confusion matrix is kept in the report and
/// may be drawn: it takes classes² cells (1000 classes: 8 MB, a 10^4-name file would take
/// 800 MB and a 900 MB JSON). Above it, the report holds the pairs that occurred instead.
pub const DEFAULT_CONFUSION_MAX_CLASSES: usize = 1000;

/// Classes reported together (e.g. those seen in training vs held out), scored with the full
/// classifier and also with one restricted to the group's own classes.
#[derive(Debug, Clone)]
pub struct LabelGroup {
    pub name: String,
    pub classes: Vec<usize>,
}

/// Running zero-shot tallies over batches of `[n, classes]` scores.
pub struct ZeroShotTally {
    classes: usize,
    k: usize,
    groups: Vec<(LabelGroup, Tensor)>,
    /// Per group, how many of its samples were ranked first among the group's classes.
    within_hits: Vec<u64>,
    samples: Vec<u64>,
    top1: Vec<u64>,
    topk: Vec<u64>,
    /// (true class, top-1 prediction) → count, for the pairs that occurred: at most one entry
    /// per sample, so memory follows what was evaluated, not classes².
    confusion: HashMap<(usize, usize), u64>,
}

/// Accuracy of one class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassResult {
    pub index: usize,
    pub samples: u64,
    pub top1: f64,
    pub top5: f64,
}

/// One label group's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupResult {
    pub classes: usize,
    pub samples: u64,
    /// Among all classes.
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class_recall: f64,
    /// Expected top-1 of a random guess among all classes.
    pub chance_top1: f64,
    /// Top-1 when only this group's classes compete.
    pub top1_within_group: f64,
    pub chance_within_group: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConfusedPair {
    #[serde(rename = "true")]
    pub truth: String,
    pub predicted: String,
    pub count: u64,
    /// Of the true class's samples.
    pub fraction: f64,
}

/// Everything a zero-shot evaluation reports (`--json` writes this).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZeroShotMetrics {
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class_recall: f64,
    pub samples: u64,
    pub classes: usize,
    pub chance_top1: f64,
    pub per_class: BTreeMap<String, ClassResult>,
    /// "all", plus each label group asked for.
    pub groups: BTreeMap<String, GroupResult>,
    /// Most frequent off-diagonal confusions, largest first.
    pub confused_pairs: Vec<ConfusedPair>,
    /// Every (true, predicted) top-1 pair that occurred, by class index, in index order: the
    /// confusion matrix without its empty cells.
    pub confusion: Vec<ConfusionCount>,
    /// `[true][predicted]` top-1 counts, in class-file order; only up to the size cap of
    /// [`ZeroShotTally::finish`] (absent above it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
}

/// One non-empty cell of the confusion matrix.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConfusionCount {
    #[serde(rename = "true")]
    pub truth: usize,
    pub predicted: usize,
    pub count: u64,
}

impl ZeroShotMetrics {
    /// The dense matrix, refused (naming the cap and what to do) when the report left it out.
    pub fn dense_confusion(&self, max_classes: usize) -> Result<&[Vec<u64>], String> {
        self.confusion_matrix.as_deref().ok_or_else(|| {
            format!(
                "the full confusion matrix of {} classes ({} cells) is over the cap of \
                 {max_classes} classes; raise --confusion-max-classes to at least {} (it takes \
                 classes² × 8 bytes) or leave out --plot: the report's confused pairs and the \
                 JSON's `confusion` list (the pairs that occurred) hold the same counts",
                self.classes,
                (self.classes as u128).pow(2),
                self.classes
            )
        })
    }
}

impl ZeroShotTally {
    /// `classes` columns in every score matrix; `groups` reported besides "all".
    pub fn new(classes: usize, groups: Vec<LabelGroup>) -> Self {
        let all = LabelGroup {
            name: "all".into(),
            classes: (0..classes).collect(),
        };
        let groups: Vec<(LabelGroup, Tensor)> = std::iter::once(all)
            .chain(groups)
            .map(|g| {
                let idx: Vec<i64> = g.classes.iter().map(|&c| c as i64).collect();
                (g, Tensor::from_slice(&idx))
            })
            .collect();
        Self {
            classes,
            k: classes.min(5),
            within_hits: vec![0; groups.len()],
            groups,
            samples: vec![0; classes],
            top1: vec![0; classes],
            topk: vec![0; classes],
            confusion: HashMap::new(),
        }
    }

    /// Adds a batch: `scores` `[n, classes]` (any float kind, any device), labels in
    /// `0..classes` (the caller checks the range).
    pub fn add(&mut self, scores: &Tensor, labels: &[i64]) {
        let scores = scores.to_kind(Kind::Float).to_device(tch::Device::Cpu);
        let n = labels.len();
        assert_eq!(scores.size(), [n as i64, self.classes as i64]);
        let ranked = Vec::<i64>::try_from(
            scores
                .topk(self.k as i64, 1, true, true)
                .1
                .contiguous()
                .view([-1]),
        )
        .expect("int64 indices");
        for (i, &label) in labels.iter().enumerate() {
            let (truth, row) = (label as usize, &ranked[i * self.k..(i + 1) * self.k]);
            self.samples[truth] += 1;
            self.top1[truth] += u64::from(row[0] == label);
            self.topk[truth] += u64::from(row.contains(&label));
            *self.confusion.entry((truth, row[0] as usize)).or_default() += 1;
        }
        for (g, (group, idx)) in self.groups.iter().enumerate() {
            let best = Vec::<i64>::try_from(scores.index_select(1, idx).argmax(1, false))
                .expect("int64 indices");
            for (i, &label) in labels.iter().enumerate() {
                if group.classes.get(best[i] as usize) == Some(&(label as usize)) {
                    self.within_hits[g] += 1;
                }
            }
        }
    }

    /// The figures; the dense confusion matrix is kept only when there are at most
    /// `max_classes` classes (see [`DEFAULT_CONFUSION_MAX_CLASSES`]).
    pub fn finish(self, names: &[String], max_classes: usize) -> ZeroShotMetrics {
        assert_eq!(names.len(), self.classes);
        let c = self.classes;
        let frac = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let group_result = |g: &LabelGroup, within: u64| {
            let samples: u64 = g.classes.iter().map(|&k| self.samples[k]).sum();
            let hit1: u64 = g.classes.iter().map(|&k| self.top1[k]).sum();
            let hitk: u64 = g.classes.iter().map(|&k| self.topk[k]).sum();
            let present: Vec<usize> = g
                .classes
                .iter()
                .copied()
                .filter(|&k| self.samples[k] > 0)
                .collect();
            let recall = present
                .iter()
                .map(|&k| frac(self.top1[k], self.samples[k]))
                .sum::<f64>()
                / present.len().max(1) as f64;
            GroupResult {
                classes: g.classes.len(),
                samples,
                top1: frac(hit1, samples),
                top5: frac(hitk, samples),
                mean_per_class_recall: recall,
                chance_top1: 1.0 / c as f64,
                top1_within_group: frac(within, samples),
                chance_within_group: 1.0 / g.classes.len().max(1) as f64,
            }
        };
        let groups: BTreeMap<String, GroupResult> = self
            .groups
            .iter()
            .zip(&self.within_hits)
            .map(|((g, _), &w)| (g.name.clone(), group_result(g, w)))
            .collect();
        let all = groups["all"].clone();
        let per_class = unique_names(names)
            .into_iter()
            .enumerate()
            .map(|(k, name)| {
                let r = ClassResult {
                    index: k,
                    samples: self.samples[k],
                    top1: frac(self.top1[k], self.samples[k]),
                    top5: frac(self.topk[k], self.samples[k]),
                };
                (name, r)
            })
            .collect();
        let mut confusion: Vec<ConfusionCount> = self
            .confusion
            .iter()
            .map(|(&(truth, predicted), &count)| ConfusionCount {
                truth,
                predicted,
                count,
            })
            .collect();
        confusion.sort_by_key(|p| (p.truth, p.predicted));
        let mut off: Vec<&ConfusionCount> = confusion
            .iter()
            .filter(|p| p.truth != p.predicted)
            .collect();
        off.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(names[a.truth].cmp(&names[b.truth]))
        });
        let pairs: Vec<ConfusedPair> = off
            .into_iter()
            .take(10)
            .map(|p| ConfusedPair {
                truth: names[p.truth].clone(),
                predicted: names[p.predicted].clone(),
                count: p.count,
                fraction: frac(p.count, self.samples[p.truth]),
            })
            .collect();
        let confusion_matrix = (c <= max_classes).then(|| {
            let mut m = vec![vec![0u64; c]; c];
            for p in &confusion {
                m[p.truth][p.predicted] = p.count;
            }
            m
        });
        ZeroShotMetrics {
            top1: all.top1,
            top5: all.top5,
            mean_per_class_recall: all.mean_per_class_recall,
            samples: all.samples,
            classes: c,
            chance_top1: 1.0 / c as f64,
            per_class,
            groups,
            confused_pairs: pairs,
            confusion,
            confusion_matrix,
        }
    }
}

/// Image↔text Recall@K (`--json` of `eval retrieval` writes this).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetrievalMetrics {
    pub images: usize,
    pub texts: usize,
    /// "recall@K" → fraction of images with one of their captions in the top K texts.
    pub image_to_text: BTreeMap<String, f64>,
    /// "recall@K" → fraction of captions whose image is in the top K images.
    pub text_to_image: BTreeMap<String, f64>,
}

pub const RECALL_AT: [usize; 3] = [1, 5, 10];

/// Recall@1/5/10 both ways from normalised embeddings; `owner[t]` is the image of text `t`.
/// The similarity matrix is formed a slice at a time, so memory stays bounded.
pub fn retrieval_recall(images: &Tensor, texts: &Tensor, owner: &[usize]) -> RetrievalMetrics {
    let (n_img, n_txt) = (images.size()[0] as usize, texts.size()[0] as usize);
    assert_eq!(owner.len(), n_txt);
    const SLICE: i64 = 1024;
    let top = |queries: &Tensor, keys: &Tensor, hit: &dyn Fn(usize, &[i64]) -> bool| {
        let k = RECALL_AT[RECALL_AT.len() - 1].min(keys.size()[0] as usize);
        let mut hits = [0u64; RECALL_AT.len()];
        let n = queries.size()[0];
        let mut start = 0;
        while start < n {
            let len = SLICE.min(n - start);
            let sim = queries.narrow(0, start, len).matmul(&keys.tr());
            let ranked = sim
                .topk(k as i64, 1, true, true)
                .1
                .to_device(tch::Device::Cpu);
            let ranked = Vec::<i64>::try_from(ranked.contiguous().view([-1])).expect("int64");
            for q in 0..len as usize {
                let row = &ranked[q * k..(q + 1) * k];
                for (j, &at) in RECALL_AT.iter().enumerate() {
                    hits[j] += u64::from(hit(start as usize + q, &row[..at.min(k)]));
                }
            }
            start += len;
        }
        let n = n.max(1) as f64;
        RECALL_AT
            .iter()
            .zip(hits)
            .map(|(at, h)| (format!("recall@{at}"), h as f64 / n))
            .collect::<BTreeMap<_, _>>()
    };
    let image_to_text = top(images, texts, &|img, row| {
        row.iter().any(|&t| owner[t as usize] == img)
    });
    let text_to_image = top(texts, images, &|txt, row| {
        row.iter().any(|&i| i as usize == owner[txt])
    });
    RetrievalMetrics {
        images: n_img,
        texts: n_txt,
        image_to_text,
        text_to_image,
    }
}

/// Class names as report keys: a name listed twice (OpenAI's ImageNet list has two "missile"s)
/// gets its label appended the second time, so no class's figures overwrite another's.
pub fn unique_names(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if seen.insert(n.as_str()) {
                n.clone()
            } else {
                format!("{n} (label {i})")
            }
        })
        .collect()
}

/// Multi-label ranking quality (`--json` of a multilabel set writes this).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MultiLabelMetrics {
    /// Mean, over the classes with at least one positive sample, of each class's average
    /// precision when all samples are ranked by that class's score.
    pub mean_average_precision: f64,
    pub samples: usize,
    pub classes: usize,
    /// Classes with at least one positive sample: those the mean is over.
    pub classes_with_positives: usize,
    /// Mean positive rate of those classes: the precision of a random ranking, which is what
    /// a model without information scores (its expected average precision is slightly above).
    pub chance_map: f64,
    /// Average precision of each class with positives.
    pub per_class: BTreeMap<String, f64>,
}

/// Average precision of one class as scikit-learn's `average_precision_score` defines it:
/// precision summed over the recall steps of the ranking, samples with equal scores forming
/// one step. `None` when no sample is positive.
pub fn average_precision(scores: &[f32], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len());
    let total = positive.iter().filter(|&&p| p).count();
    if total == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut ap, mut last_recall) = (0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            tp += usize::from(positive[order[j]]);
            j += 1;
        }
        // `j` samples ranked so far, `tp` of them positive.
        let recall = tp as f64 / total as f64;
        ap += (recall - last_recall) * tp as f64 / j as f64;
        last_recall = recall;
        i = j;
    }
    Some(ap)
}

/// mAP of `scores` (`[n, classes]`, row-major) against multi-hot `targets`.
pub fn multilabel_map(
    scores: &[f32],
    targets: &[Vec<bool>],
    names: &[String],
) -> MultiLabelMetrics {
    let (n, c) = (targets.len(), names.len());
    assert_eq!(scores.len(), n * c);
    let keys = unique_names(names);
    let mut per_class = BTreeMap::new();
    let mut rates = Vec::new();
    for k in 0..c {
        let col: Vec<f32> = (0..n).map(|i| scores[i * c + k]).collect();
        let pos: Vec<bool> = targets.iter().map(|t| t[k]).collect();
        if let Some(ap) = average_precision(&col, &pos) {
            per_class.insert(keys[k].clone(), ap);
            rates.push(pos.iter().filter(|&&p| p).count() as f64 / n as f64);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let aps: Vec<f64> = per_class.values().copied().collect();
    MultiLabelMetrics {
        mean_average_precision: mean(&aps),
        samples: n,
        classes: c,
        classes_with_positives: aps.len(),
        chance_map: mean(&rates),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    /// Six classes so top-5 differs from "everything"; scores chosen by hand.
    #[test]
    fn topk_per_class_and_confusion_on_a_hand_made_case() {
        // Sample 0 (class 0): ranked 0 first → top-1 and top-5 hit.
        // Sample 1 (class 0): ranked 2,0,... → top-1 miss (confused with 2), top-5 hit.
        // Sample 2 (class 1): ranked 5,4,3,2,0,1 → both miss (class 1 is last).
        // Sample 3 (class 2): ranked 2 first → hit.
        let scores = Tensor::from_slice(&[
            0.9f32, 0.1, 0.2, 0.0, 0.0, 0.0, //
            0.8, 0.1, 0.9, 0.0, 0.0, 0.0, //
            0.2, 0.1, 0.3, 0.4, 0.5, 0.6, //
            0.1, 0.0, 0.7, 0.2, 0.3, 0.4,
        ])
        .view([4, 6]);
        let mut t = ZeroShotTally::new(
            6,
            vec![
                LabelGroup {
                    name: "seen".into(),
                    classes: vec![0, 1],
                },
                LabelGroup {
                    name: "held_out".into(),
                    classes: vec![2, 3, 4, 5],
                },
            ],
        );
        t.add(&scores, &[0, 0, 1, 2]);
        let m = t.finish(&names(6), DEFAULT_CONFUSION_MAX_CLASSES);
        assert_eq!(m.samples, 4);
        assert_eq!(m.top1, 2.0 / 4.0);
        assert_eq!(m.top5, 3.0 / 4.0);
        // Recall per class: c0 1/2, c1 0/1, c2 1/1 → mean over the 3 present classes.
        assert!((m.mean_per_class_recall - (0.5 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.per_class["c0"].top1, 0.5);
        assert_eq!(m.per_class["c0"].top5, 1.0);
        assert_eq!(m.per_class["c1"].top5, 0.0);
        assert_eq!(m.per_class["c3"].samples, 0);
        let dense = m.dense_confusion(6).unwrap();
        assert_eq!(dense[0], vec![1, 0, 1, 0, 0, 0]);
        assert_eq!(dense[1][5], 1);
        let cell = |truth, predicted, count| ConfusionCount {
            truth,
            predicted,
            count,
        };
        assert_eq!(
            m.confusion,
            [cell(0, 0, 1), cell(0, 2, 1), cell(1, 5, 1), cell(2, 2, 1)]
        );
        assert_eq!(m.confused_pairs.len(), 2);
        assert!(
            m.confused_pairs
                .iter()
                .any(|p| p.truth == "c0" && p.predicted == "c2" && p.fraction == 0.5)
        );
        let seen = &m.groups["seen"];
        assert_eq!((seen.samples, seen.top1, seen.classes), (3, 1.0 / 3.0, 2));
        // Within {0, 1}: sample 1 now ranks 0 over 1 (0.8 > 0.1): hit; sample 2: 0.2 > 0.1: miss.
        assert_eq!(seen.top1_within_group, 2.0 / 3.0);
        assert_eq!(seen.chance_within_group, 0.5);
        let held = &m.groups["held_out"];
        assert_eq!(
            (held.samples, held.top1, held.top1_within_group),
            (1, 1.0, 1.0)
        );
        assert_eq!(m.groups["all"].chance_top1, 1.0 / 6.0);
    }

    #[test]
    fn batches_accumulate_like_one() {
        let scores = Tensor::randn([40, 7], (Kind::Float, tch::Device::Cpu));
        let labels: Vec<i64> = (0..40).map(|i| (i * 3 % 7) as i64).collect();
        let mut one = ZeroShotTally::new(7, vec![]);
        one.add(&scores, &labels);
        let mut parts = ZeroShotTally::new(7, vec![]);
        parts.add(&scores.narrow(0, 0, 13), &labels[..13]);
        parts.add(&scores.narrow(0, 13, 27), &labels[13..]);
        assert_eq!(one.finish(&names(7), 7), parts.finish(&names(7), 7));
    }

    #[test]
    fn confusion_memory_follows_the_samples_not_classes_squared() {
        // 10^5 class names and 3 images: the dense matrix would be 80 GB; the tally holds 2 cells.
        let c = 100_000;
        let scores = Tensor::zeros([3, c], (Kind::Float, tch::Device::Cpu));
        let _ = scores.get(0).get(7).fill_(1.0);
        let _ = scores.get(1).get(9).fill_(1.0);
        let _ = scores.get(2).get(9).fill_(1.0);
        let mut t = ZeroShotTally::new(c as usize, vec![]);
        t.add(&scores, &[7, 8, 8]);
        let m = t.finish(&names(c as usize), DEFAULT_CONFUSION_MAX_CLASSES);
        assert_eq!(m.confusion_matrix, None);
        assert_eq!(m.confusion.len(), 2);
        assert_eq!((m.confused_pairs.len(), m.confused_pairs[0].count), (1, 2));
        assert_eq!(m.confused_pairs[0].predicted, "c9");
        let e = m
            .dense_confusion(DEFAULT_CONFUSION_MAX_CLASSES)
            .unwrap_err();
        assert!(
            e.contains("100000 classes")
                && e.contains("cap of 1000 classes")
                && e.contains("--confusion-max-classes"),
            "{e}"
        );
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("confusion_matrix"), "{}", json.len());
    }

    #[test]
    fn average_precision_matches_hand_computed_values() {
        // Positives ranked 1st and 3rd: (1/1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        // A tie between a positive and a negative is one step at precision 1/2.
        assert_eq!(average_precision(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
        // Two classes over three samples; class 2 has no positive and is left out of the mean.
        // Class 0: positives at ranks 2, 3 → (1/2 + 2/3) / 2; class 1: rank 1 → 1.
        let scores = [0.9f32, 0.1, 0.0, 0.5, 0.8, 0.0, 0.4, 0.3, 0.0];
        let t = vec![
            vec![false, false, false],
            vec![true, true, false],
            vec![true, false, false],
        ];
        let m = multilabel_map(&scores, &t, &names(3));
        let c0 = (0.5 + 2.0 / 3.0) / 2.0;
        assert!((m.per_class["c0"] - c0).abs() < 1e-12);
        assert_eq!(m.per_class["c1"], 1.0);
        assert!((m.mean_average_precision - (c0 + 1.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.classes_with_positives, 2);
        assert!((m.chance_map - (2.0 / 3.0 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        // A perfect ranking scores 1.
        let perfect = multilabel_map(
            &[1.0, 0.0, 0.0, 1.0],
            &[vec![true, false], vec![false, true]],
            &names(2),
        );
        assert_eq!(perfect.mean_average_precision, 1.0);
        assert_eq!(
            unique_names(&["a".into(), "b".into(), "a".into()]),
            ["a", "b", "a (label 2)"]
        );
    }

    #[test]
    fn recall_counts_any_caption_of_the_image() {
        // Two images on the axes; three captions: two of image 0, one of image 1.
        let images = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        // Caption 0 points at image 1 (wrong), caption 1 at image 0, caption 2 at image 1.
        let texts = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0, 0.1, 0.9]).view([3, 2]);
        let m = retrieval_recall(&images, &texts, &[0, 0, 1]);
        // Image 0's best text is caption 1 (its own); image 1's best is caption 0 (not its own).
        assert_eq!(m.image_to_text["recall@1"], 0.5);
        // Caption 0 → image 1 (wrong), caption 1 → image 0, caption 2 → image 1.
        assert!((m.text_to_image["recall@1"] - 2.0 / 3.0).abs() < 1e-12);
        // Only two images, so top-5 holds both: everything is found.
        assert_eq!(m.text_to_image["recall@5"], 1.0);
        assert_eq!(m.image_to_text["recall@10"], 1.0);
    }
}

//! Linear probes and k-NN on frozen image features: how the CLIP paper and CLIP_benchmark
//! measure what a representation holds beyond zero-shot prompts.
//!
//! The probe is multinomial logistic regression, `mean cross-entropy + wd/2 · |W|²` (bias not
//! penalised), minimised to convergence with full-batch L-BFGS in float64 — the objective of
//! scikit-learn's `LogisticRegression(C = 1 / (wd · N))`, so the two agree on the same features.
//! The weight decay is chosen on a held-out fifth of the training features, then the probe is
//! refitted on all of them and scored on the test split. k-NN is DINO's weighted vote:
//! the k most cosine-similar training features vote for their class with weight exp(sim / T).
use super::EvalError;
use crate::data::stream::mix;
use serde::Serialize;
use std::collections::VecDeque;
use tch::{Device, Kind, Tensor};

/// Image features and their class labels (rows of `x` in label order of `y`).
pub struct Features {
    /// `[n, dim]`.
    pub x: Tensor,
    pub y: Vec<i64>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    fn rows(&self, idx: &[usize]) -> Features {
        let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        Features {
            x: self.x.index_select(0, &Tensor::from_slice(&i)),
            y: idx.iter().map(|&i| self.y[i]).collect(),
        }
    }

    /// Up to `shots` samples of each class, drawn with `seed` (few-shot probes); the classes
    /// that have fewer keep all theirs and are returned (by index) to be reported.
    pub fn few_shot(&self, shots: usize, classes: usize, seed: u64) -> (Features, Vec<usize>) {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &c) in self.y.iter().enumerate() {
            by_class[c as usize].push(i);
        }
        let mut keep = Vec::new();
        let mut short = Vec::new();
        for (c, mut idx) in by_class.into_iter().enumerate() {
            idx.sort_by_key(|&i| mix(seed, 0xF3_5407, i as u64));
            if idx.len() < shots {
                short.push(c);
            }
            keep.extend(idx.into_iter().take(shots));
        }
        keep.sort_unstable();
        (self.rows(&keep), short)
    }

    /// The classes (by index, ascending) of `0..classes` with no sample here. A probe fitted on
    /// such a split can never predict them, which its top-1 over all classes does not show.
    pub fn missing_classes(&self, classes: usize) -> Vec<usize> {
        let mut seen = vec![false; classes];
        for &c in &self.y {
            if let Some(s) = usize::try_from(c).ok().and_then(|c| seen.get_mut(c)) {
                *s = true;
            }
        }
        (0..classes).filter(|&c| !seen[c]).collect()
    }
}

/// Choices of [`linear_probe`].
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Weight decays tried on the held-out part of train; one value skips the search.
    pub weight_decays: Vec<f64>,
    /// L-BFGS iterations per fit (it stops earlier once the gradient vanishes).
    pub max_iter: usize,
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            weight_decays: vec![1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
            max_iter: 1000,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub classes: usize,
    pub train_samples: usize,
    pub test_samples: usize,
    pub weight_decay: f64,
    /// (weight decay, top-1 on the held-out part of train) for each one tried.
    pub search: Vec<(f64, f64)>,
    pub top1: f64,
    pub top5: f64,
    /// Classes without a training image (by index): the probe cannot predict them.
    pub classes_without_training_images: Vec<usize>,
    /// Top-1 over the test images whose class had training images (`None`: no such image);
    /// equal to `top1` when every class had some.
    pub top1_classes_with_training_images: Option<f64>,
    /// The test images that figure is over.
    pub test_samples_classes_with_training_images: usize,
}

/// The classes `train` lacks, and the top-1 of `scores` over the test images of the other
/// classes (`None` when there is none) with their count.
fn coverage(
    scores: &Tensor,
    train: &Features,
    test: &Features,
    classes: usize,
) -> (Vec<usize>, Option<f64>, usize) {
    let missing = train.missing_classes(classes);
    let trained: Vec<i64> = (0..test.len() as i64)
        .filter(|&i| {
            missing
                .binary_search(&(test.y[i as usize] as usize))
                .is_err()
        })
        .collect();
    let top1 = (!trained.is_empty()).then(|| {
        let rows = Tensor::from_slice(&trained).to_device(scores.device());
        let labels: Vec<i64> = trained.iter().map(|&i| test.y[i as usize]).collect();
        topk(&scores.index_select(0, &rows), &labels, 1)
    });
    (missing, top1, trained.len())
}

/// Fits a probe on `train` (weight decay chosen on a held-out fifth) and scores it on `test`.
pub fn linear_probe(
    train: &Features,
    test: &Features,
    classes: usize,
    opts: &ProbeOptions,
) -> Result<ProbeReport, EvalError> {
    check(train, test, classes)?;
    let mut search = Vec::new();
    let weight_decay = match opts.weight_decays.as_slice() {
        [] => return Err(EvalError::Input("no weight decay to try".into())),
        [wd] => *wd,
        grid => {
            let (fit_part, held_out) = split_off_fifth(train, opts.seed);
            for &wd in grid {
                let probe = LogisticRegression::fit(&fit_part, classes, wd, opts.max_iter);
                search.push((wd, topk(&probe.logits(&held_out.x), &held_out.y, 1)));
            }
            // The best held-out top-1; among equals the strongest decay (the simpler model).
            search
                .iter()
                .copied()
                .fold(
                    (0.0, -1.0),
                    |best, (wd, acc)| {
                        if acc >= best.1 { (wd, acc) } else { best }
                    },
                )
                .0
        }
    };
    let probe = LogisticRegression::fit(train, classes, weight_decay, opts.max_iter);
    let logits = probe.logits(&test.x);
    let (missing, top1_trained, trained) = coverage(&logits, train, test, classes);
    Ok(ProbeReport {
        classes,
        train_samples: train.len(),
        test_samples: test.len(),
        weight_decay,
        search,
        top1: topk(&logits, &test.y, 1),
        top5: topk(&logits, &test.y, 5.min(classes)),
        classes_without_training_images: missing,
        top1_classes_with_training_images: top1_trained,
        test_samples_classes_with_training_images: trained,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct KnnReport {
    pub k: usize,
    pub temperature: f64,
    pub classes: usize,
    pub train_samples: usize,
    pub test_samples: usize,
    pub top1: f64,
    pub top5: f64,
    /// As in [`ProbeReport`]: no neighbour can vote for a class without training images.
    pub classes_without_training_images: Vec<usize>,
    pub top1_classes_with_training_images: Option<f64>,
    pub test_samples_classes_with_training_images: usize,
}

/// Weighted k-NN (DINO's): cosine similarity on L2-normalised features, the `k` nearest
/// training features vote for their class with weight exp(sim / `temperature`).
pub fn knn(
    train: &Features,
    test: &Features,
    classes: usize,
    k: usize,
    temperature: f64,
) -> Result<KnnReport, EvalError> {
    check(train, test, classes)?;
    if k == 0 || !(temperature.is_finite() && temperature > 0.0) {
        return Err(EvalError::Input(format!(
            "k-NN needs k >= 1 and a temperature > 0 (got k = {k}, temperature = {temperature})"
        )));
    }
    let k = k.min(train.len());
    let norm = |x: &Tensor| crate::model::l2_normalize(&x.to_kind(Kind::Float));
    let (tx, qx) = (norm(&train.x), norm(&test.x));
    let train_y = Tensor::from_slice(&train.y).to_device(tx.device());
    let mut scores = Vec::new();
    // In blocks of test rows, so the similarity matrix never exceeds 1024 × n_train.
    for start in (0..test.len() as i64).step_by(1024) {
        let q = qx.narrow(0, start, 1024.min(test.len() as i64 - start));
        let (sim, idx) = q.matmul(&tx.tr()).topk(k as i64, 1, true, true);
        let votes = Tensor::zeros([q.size()[0], classes as i64], (Kind::Float, q.device()));
        let neighbour_class = train_y.index_select(0, &idx.flatten(0, 1)).view_as(&idx);
        // exp((sim - max) / T): the same vote up to a per-row factor, so the ranking is
        // exp(sim / T)'s, but a small T cannot overflow to inf and leave ties to decide.
        let nearest = sim.narrow(1, 0, 1);
        let weights = ((&sim - nearest) / temperature).exp();
        scores.push(votes.scatter_add(1, &neighbour_class, &weights));
    }
    let scores = Tensor::cat(&scores, 0);
    let (missing, top1_trained, trained) = coverage(&scores, train, test, classes);
    Ok(KnnReport {
        k,
        temperature,
        classes,
        train_samples: train.len(),
        test_samples: test.len(),
        top1: topk(&scores, &test.y, 1),
        top5: topk(&scores, &test.y, 5.min(classes)),
        classes_without_training_images: missing,
        top1_classes_with_training_images: top1_trained,
        test_samples_classes_with_training_images: trained,
    })
}

fn check(train: &Features, test: &Features, classes: usize) -> Result<(), EvalError> {
    if train.is_empty() || test.is_empty() {
        return Err(EvalError::Input(format!(
            "a probe needs features of both splits; train has {}, test has {}",
            train.len(),
            test.len()
        )));
    }
    // Shapes before any matmul: a mismatch is an error naming both, not a libtorch panic.
    for (name, f) in [("train", train), ("test", test)] {
        let size = f.x.size();
        if size.len() != 2 || size[0] != f.len() as i64 {
            return Err(EvalError::Input(format!(
                "the {name} features have shape {size:?} for {} labels; a probe needs \
                 [samples, width] with one label per row",
                f.len()
            )));
        }
        let bad =
            f.x.isfinite()
                .logical_not()
                .sum(Kind::Int64)
                .int64_value(&[]);
        if bad > 0 {
            return Err(EvalError::Input(format!(
                "the {name} features hold {bad} non-finite (NaN or infinite) values"
            )));
        }
    }
    let (a, b) = (train.x.size()[1], test.x.size()[1]);
    if a != b {
        return Err(EvalError::Input(format!(
            "the train features are {a} wide and the test features {b}: they must come from the \
             same model"
        )));
    }
    if let Some(bad) = train
        .y
        .iter()
        .chain(&test.y)
        .find(|&&c| c < 0 || c as usize >= classes)
    {
        return Err(EvalError::Input(format!(
            "label {bad} is outside the {classes} classes"
        )));
    }
    Ok(())
}

/// Share of rows whose label is among the `k` highest scores.
fn topk(scores: &Tensor, labels: &[i64], k: usize) -> f64 {
    let top = scores
        .topk(k as i64, 1, true, true)
        .1
        .to_device(Device::Cpu);
    let y = Tensor::from_slice(labels).unsqueeze(1);
    let hits = top.eq_tensor(&y).any_dim(1, false).sum(Kind::Int64);
    hits.int64_value(&[]) as f64 / labels.len() as f64
}

/// A deterministic fifth of `f` held out (every sample's side fixed by `seed`), and the rest.
fn split_off_fifth(f: &Features, seed: u64) -> (Features, Features) {
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by_key(|&i| mix(seed, 0x40_1D0, i as u64));
    let held = (f.len() / 5).max(1);
    let (mut held_out, mut rest) = (order[..held].to_vec(), order[held..].to_vec());
    held_out.sort_unstable();
    rest.sort_unstable();
    (f.rows(&rest), f.rows(&held_out))
}

/// Multinomial logistic regression `x W + b`, in float64 on the CPU.
pub struct LogisticRegression {
    /// `[dim, classes]`.
    pub w: Tensor,
    /// `[classes]`.
    pub b: Tensor,
}

impl LogisticRegression {
    /// Minimises `mean CE + wd/2 |W|²` over `f` with L-BFGS.
    pub fn fit(f: &Features, classes: usize, wd: f64, max_iter: usize) -> Self {
        let x = f.x.to_device(Device::Cpu).to_kind(Kind::Double);
        let (n, d) = (x.size()[0], x.size()[1]);
        let c = classes as i64;
        let onehot = Tensor::from_slice(&f.y).one_hot(c).to_kind(Kind::Double);
        let unpack = |theta: &Tensor| {
            (
                theta.narrow(0, 0, d * c).view([d, c]),
                theta.narrow(0, d * c, c),
            )
        };
        let objective = |theta: &Tensor| {
            let (w, b) = unpack(theta);
            let logits = x.matmul(&w) + &b;
            let lse = logits.logsumexp([1], false);
            let ce = (&lse - (&logits * &onehot).sum_dim_intlist(1, false, Kind::Double))
                .mean(Kind::Double);
            let loss =
                ce.double_value(&[]) + 0.5 * wd * w.square().sum(Kind::Double).double_value(&[]);
            let err = (logits - lse.unsqueeze(1)).exp() - &onehot;
            let gw = x.tr().matmul(&err) / n as f64 + &w * wd;
            let gb = err.mean_dim(0, false, Kind::Double);
            (loss, Tensor::cat(&[gw.flatten(0, 1), gb], 0))
        };
        let theta = lbfgs(
            objective,
            Tensor::zeros([d * c + c], (Kind::Double, Device::Cpu)),
            max_iter,
        );
        let (w, b) = unpack(&theta);
        Self { w, b }
    }

    /// `[n, classes]` scores of `x`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        x.to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .matmul(&self.w)
            + &self.b
    }
}

/// Limited-memory BFGS (10 pairs) with a backtracking Armijo line search, from `x`; stops when
/// the largest gradient entry is below 1e-7 or the objective no longer moves.
fn lbfgs(f: impl Fn(&Tensor) -> (f64, Tensor), mut x: Tensor, max_iter: usize) -> Tensor {
    const PAIRS: usize = 10;
    let dot = |a: &Tensor, b: &Tensor| a.dot(b).double_value(&[]);
    let (mut fx, mut g) = f(&x);
    let mut hist: VecDeque<(Tensor, Tensor, f64)> = VecDeque::new();
    for _ in 0..max_iter {
        let gmax = g.abs().max().double_value(&[]);
        if gmax < 1e-7 {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.copy();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q -= y * a;
            alphas.push(a);
        }
        let gamma = match hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / gmax.max(1.0),
        };
        let mut r = q * gamma;
        for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &r);
            r += s * (a - b);
        }
        let mut d = -r;
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (curvature lost): restart from steepest descent.
            hist.clear();
            d = -&g / gmax.max(1.0);
            slope = dot(&g, &d);
        }
        let mut t = 1.0;
        let (xn, fxn, gn) = loop {
            let xn = &x + &d * t;
            let (fxn, gn) = f(&xn);
            if fxn <= fx + 1e-4 * t * slope || t < 1e-12 {
                break (xn, fxn, gn);
            }
            t *= 0.5;
        };
        let (s, y) = (&xn - &x, &gn - &g);
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            hist.push_back((s, y, 1.0 / sy));
            if hist.len() > PAIRS {
                hist.pop_front();
            }
        }
        let settled = (fx - fxn).abs() <= 1e-15 * fx.abs().max(1.0);
        (x, fx, g) = (xn, fxn, gn);
        if settled {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` samples of `classes` Gaussian blobs in `dim` dimensions, centres `spread` apart.
    pub(crate) fn blobs(n: usize, classes: usize, dim: i64, spread: f64, seed: i64) -> Features {
        tch::manual_seed(seed);
        let centres = Tensor::randn([classes as i64, dim], (Kind::Float, Device::Cpu)) * spread;
        let y: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
        let x = centres.index_select(0, &Tensor::from_slice(&y))
            + Tensor::randn([n as i64, dim], (Kind::Float, Device::Cpu));
        Features { x, y }
    }

    #[test]
    fn features_of_another_width_rank_or_with_nan_are_refused_not_a_panic() {
        let f = |rows: i64, width: i64| Features {
            x: Tensor::ones([rows, width], (Kind::Float, Device::Cpu)),
            y: (0..rows).map(|i| i % 2).collect(),
        };
        let opts = ProbeOptions::default();
        let err = |r: Result<ProbeReport, EvalError>| r.err().unwrap().to_string();
        // [48, 7] features against a 32-wide train split (issue 27, item 11).
        let msg = err(linear_probe(&f(48, 32), &f(48, 7), 2, &opts));
        assert!(
            msg.contains("32 wide") && msg.contains("test features 7"),
            "{msg}"
        );
        let knn_err = knn(&f(48, 32), &f(48, 7), 2, 5, 0.07).err().unwrap();
        assert!(knn_err.to_string().contains("same model"), "{knn_err}");
        let one_d = Features {
            x: Tensor::ones([48], (Kind::Float, Device::Cpu)),
            y: vec![0; 48],
        };
        let msg = err(linear_probe(&f(48, 32), &one_d, 2, &opts));
        assert!(msg.contains("test features have shape [48]"), "{msg}");
        let nan = Features {
            x: f(48, 32).x * f64::NAN,
            y: vec![0; 48],
        };
        let msg = err(linear_probe(&nan, &f(48, 32), 2, &opts));
        assert!(msg.contains("1536 non-finite"), "{msg}");
    }

    #[test]
    fn the_fit_reaches_a_zero_gradient_of_the_penalised_objective() {
        let f = blobs(120, 3, 4, 1.0, 1);
        let p = LogisticRegression::fit(&f, 3, 1e-2, 1000);
        // Finite differences of the objective at the solution: flat in every direction.
        let objective = |w: &Tensor, b: &Tensor| {
            let logits = f.x.to_kind(Kind::Double).matmul(w) + b;
            let ce = logits.cross_entropy_for_logits(&Tensor::from_slice(&f.y));
            ce.double_value(&[]) + 0.5e-2 * w.square().sum(Kind::Double).double_value(&[])
        };
        let base = objective(&p.w, &p.b);
        for i in 0..12 {
            let dw = Tensor::zeros([12], (Kind::Double, Device::Cpu));
            let _ = dw.get(i).fill_(1e-4);
            let up = objective(&(&p.w + dw.view([4, 3])), &p.b);
            assert!(
                ((up - base) / 1e-4).abs() < 1e-3,
                "direction {i}: slope {}",
                (up - base) / 1e-4
            );
        }
    }

    #[test]
    fn features_that_encode_the_label_give_100_and_noise_gives_chance() {
        let train = blobs(200, 4, 8, 10.0, 2);
        let test = blobs(200, 4, 8, 10.0, 2);
        let r = linear_probe(&train, &test, 4, &ProbeOptions::default()).unwrap();
        assert_eq!(r.top1, 1.0, "{r:?}");
        assert_eq!(r.search.len(), 6);
        let k = knn(&train, &test, 4, 5, 0.07).unwrap();
        assert_eq!(k.top1, 1.0);

        let noise = |seed| {
            tch::manual_seed(seed);
            Features {
                x: Tensor::randn([400, 8], (Kind::Float, Device::Cpu)),
                y: (0..400).map(|i| i % 4).collect(),
            }
        };
        let one = ProbeOptions {
            weight_decays: vec![1e-2],
            ..ProbeOptions::default()
        };
        let r = linear_probe(&noise(3), &noise(4), 4, &one).unwrap();
        assert!((r.top1 - 0.25).abs() < 0.1, "noise probe {}", r.top1);
        let k = knn(&noise(3), &noise(4), 4, 20, 0.07).unwrap();
        assert!((k.top1 - 0.25).abs() < 0.1, "noise k-NN {}", k.top1);
    }

    #[test]
    fn few_shot_keeps_k_per_class_and_names_the_short_ones() {
        let f = Features {
            x: Tensor::arange(7, (Kind::Float, Device::Cpu)).unsqueeze(1),
            y: vec![0, 0, 0, 1, 1, 2, 0],
        };
        let (few, short) = f.few_shot(2, 4, 9);
        let mut counts = [0; 4];
        for &c in &few.y {
            counts[c as usize] += 1;
        }
        assert_eq!(counts, [2, 2, 1, 0]);
        assert_eq!(short, [2, 3]);
        let (again, _) = f.few_shot(2, 4, 9);
        assert!(
            few.x.equal(&again.x),
            "the same seed draws the same samples"
        );
    }

    #[test]
    fn classes_without_training_images_are_named_and_scored_apart() {
        // Four well-separated classes; train has none of class 3, test has all four.
        let all = blobs(200, 4, 8, 10.0, 6);
        let keep: Vec<usize> = (0..all.len()).filter(|&i| all.y[i] != 3).collect();
        let train = all.rows(&keep);
        // Scored on the same images (one draw of the global RNG, whatever runs beside).
        let test = all.rows(&(0..all.len()).collect::<Vec<_>>());
        assert_eq!(train.missing_classes(4), [3]);
        assert_eq!(train.missing_classes(6), [3, 4, 5]);
        let one = ProbeOptions {
            weight_decays: vec![1e-3],
            ..ProbeOptions::default()
        };
        let r = linear_probe(&train, &test, 4, &one).unwrap();
        assert_eq!(r.classes_without_training_images, [3]);
        assert_eq!(r.test_samples_classes_with_training_images, 150);
        assert_eq!(r.top1_classes_with_training_images, Some(1.0));
        // Class 3's 50 test images cannot be right.
        assert!(r.top1 <= 0.75, "{r:?}");
        let k = knn(&train, &test, 4, 5, 0.07).unwrap();
        assert_eq!(k.classes_without_training_images, [3]);
        assert_eq!(k.top1_classes_with_training_images, Some(1.0));
        let full = linear_probe(&all, &test, 4, &one).unwrap();
        assert!(full.classes_without_training_images.is_empty());
        assert_eq!(full.top1_classes_with_training_images, Some(full.top1));
        // Only unseen classes in test: no figure rather than 0 %.
        let only3: Vec<usize> = (0..test.len()).filter(|&i| test.y[i] == 3).collect();
        let r = linear_probe(&train, &test.rows(&only3), 4, &one).unwrap();
        assert_eq!(r.top1_classes_with_training_images, None);
    }

    #[test]
    fn labels_outside_the_classes_are_refused() {
        let f = blobs(10, 2, 2, 1.0, 5);
        let err = linear_probe(&f, &f, 1, &ProbeOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "label 1 is outside the 1 classes");
    }

    #[test]
    fn a_small_temperature_lets_the_nearest_neighbour_decide_without_overflow() {
        // The query's nearest training feature is class 1 (cosine 1); three class-0 features are
        // a little farther (cosine 0.98). At T = 1 the three outvote it; at T = 0.005,
        // exp(sim / T) would overflow f32 for all four and leave a tie.
        let x = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.2, 1.0, 0.2, 1.0, 0.2]).view([4, 2]);
        let train = Features {
            x,
            y: vec![1, 0, 0, 0],
        };
        let test = Features {
            x: Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]),
            y: vec![1],
        };
        assert_eq!(knn(&train, &test, 2, 4, 1.0).unwrap().top1, 0.0);
        assert_eq!(knn(&train, &test, 2, 4, 0.005).unwrap().top1, 1.0);
        assert_eq!(knn(&train, &test, 2, 4, 1e-6).unwrap().top1, 1.0);
    }
}

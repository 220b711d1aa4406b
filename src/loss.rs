//! Contrastive image–text losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid loss.
//!
//! Both take raw (unnormalised) tower outputs and the *log* of the temperature, as stored in the
//! model; normalisation and `exp` happen here so every caller gets them right.
use tch::{Kind, Reduction, Tensor};

use crate::config::{LossConfig, LossKind};

/// The training loss selected by `[loss]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipLoss {
    kind: LossKind,
    max_logit_scale: f64,
    /// `loss.mask_same_class`: pairs of one class are not negatives of each other.
    mask_same_class: bool,
}

pub use crate::model::l2_normalize;

impl ClipLoss {
    /// The loss described by `cfg`.
    pub fn new(cfg: &LossConfig) -> Self {
        Self {
            kind: cfg.kind,
            max_logit_scale: cfg.max_logit_scale,
            mask_same_class: cfg.mask_same_class,
        }
    }

    /// The scalar loss for a batch of N paired features (`[N, D]` each; pair i is the positive).
    ///
    /// `logit_scale` is the log temperature (a 0-dim tensor). `logit_bias` is SigLIP's learnable
    /// bias; it is also added to InfoNCE logits when given (as OpenCLIP's `ClipLoss` does), and
    /// SigLIP without it uses a bias of 0. The whole batch is the one slice of a job of one
    /// process, so this is [`forward_local`](Self::forward_local) over all N rows.
    pub fn forward(
        &self,
        image_features: &Tensor,
        text_features: &Tensor,
        logit_scale: &Tensor,
        logit_bias: Option<&Tensor>,
    ) -> Tensor {
        let n = image_features.size()[0];
        self.forward_local(image_features, text_features, 0, n, logit_scale, logit_bias)
    }

    /// The share of the loss of rows `start..start + len` of a gathered batch (distributed
    /// training with `local_loss`): those images against every caption and those captions
    /// against every image, averaged over the `len` rows. Over a partition of the rows into W
    /// equal slices these sum to W times [`forward`](Self::forward) on the whole batch.
    pub fn forward_local(
        &self,
        image_features: &Tensor,
        text_features: &Tensor,
        start: i64,
        len: i64,
        logit_scale: &Tensor,
        logit_bias: Option<&Tensor>,
    ) -> Tensor {
        let head = (logit_scale, logit_bias);
        self.forward_classes(image_features, text_features, (start, len), head, None)
    }

    /// [`forward_local`](Self::forward_local) for class-labelled pairs: with
    /// `loss.mask_same_class`, `classes` (the `[N]` labels of the gathered batch) leaves every
    /// pair of two different samples of one class out of the loss — out of the softmax's
    /// denominator for InfoNCE, out of the sum for SigLIP — instead of treating it as a
    /// negative. A sample's own pair stays the positive. Without the key (or labels) it is
    /// `forward_local`.
    pub fn forward_classes(
        &self,
        image_features: &Tensor,
        text_features: &Tensor,
        (start, len): (i64, i64),
        (logit_scale, logit_bias): (&Tensor, Option<&Tensor>),
        classes: Option<&Tensor>,
    ) -> Tensor {
        // [len, N]: true where row i and column j are different samples of one class.
        let masked = classes.filter(|_| self.mask_same_class).map(|c| {
            let c = c.to_device(image_features.device());
            let n = c.size()[0];
            let same = c.unsqueeze(1).eq_tensor(&c.unsqueeze(0));
            let other = Tensor::eye(n, (Kind::Bool, c.device())).logical_not();
            same.logical_and(&other).narrow(0, start, len)
        });
        let image = l2_normalize(image_features);
        let text = l2_normalize(text_features);
        let scale = logit_scale.exp();
        let logits = |rows: &Tensor, cols: &Tensor| {
            let l = rows.narrow(0, start, len).matmul(&cols.tr()) * &scale;
            match logit_bias {
                Some(b) => l + b,
                None => l,
            }
        };
        let per_image = logits(&image, &text);
        match self.kind {
            LossKind::InfoNce => {
                let labels =
                    Tensor::arange_start(start, start + len, (Kind::Int64, image.device()));
                // The mask is symmetric, so the text rows take it as the image rows do.
                let hide = |l: Tensor| match &masked {
                    Some(m) => l.masked_fill(m, f64::NEG_INFINITY),
                    None => l,
                };
                let ce = |l: Tensor| {
                    hide(l).cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0)
                };
                (ce(per_image) + ce(logits(&text, &image))) / 2.0
            }
            LossKind::Siglip => {
                // SigLIP's loss is a sum over all (image, caption) pairs, so the image rows
                // alone partition it (as OpenCLIP's distributed SigLIP does).
                let n = image.size()[0];
                let labels = Tensor::eye(n, (per_image.kind(), per_image.device()))
                    .narrow(0, start, len)
                    * 2.0
                    - 1.0;
                let terms = (labels * &per_image).log_sigmoid();
                let terms = match &masked {
                    Some(m) => terms.masked_fill(m, 0.0),
                    None => terms,
                };
                -terms.sum(per_image.kind()) / len as f64
            }
        }
    }

    /// Clamps the log temperature in place to `[0, ln loss.max_logit_scale]`, as OpenCLIP does
    /// after every optimizer step: an unbounded scale makes the softmax saturate and training
    /// diverge.
    pub fn clamp_logit_scale(&self, logit_scale: &Tensor) {
        tch::no_grad(|| {
            let _ = logit_scale
                .shallow_clone()
                .clamp_(0.0, self.max_logit_scale.ln());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn loss(kind: LossKind) -> ClipLoss {
        ClipLoss::new(&LossConfig {
            kind,
            max_logit_scale: 100.0,
            mask_same_class: true,
        })
    }

    fn t2(rows: &[[f64; 2]]) -> Tensor {
        Tensor::from_slice(rows.concat().as_slice()).view([rows.len() as i64, 2])
    }

    #[test]
    fn infonce_hand_computed_2x2() {
        // I = eye(2), T = [[0.6, 0.8], [0, 1]] (unit rows), s = exp(0) = 1:
        // logits_per_image = I·Tᵀ = [[0.6, 0], [0.8, 1]]
        //   row 0: ln(e^0.6 + e^0) − 0.6 = 0.4374879504858856
        //   row 1: ln(e^0.8 + e^1) − 1   = 0.5981388693815919
        // logits_per_text = [[0.6, 0.8], [0, 1]]
        //   row 0: ln(e^0.6 + e^0.8) − 0.6 = 0.7981388693815920
        //   row 1: ln(e^0 + e^1) − 1       = 0.3132616875182228
        // loss = ((0.43749 + 0.59814)/2 + (0.79814 + 0.31326)/2) / 2 = 0.5367568441918231
        let l = loss(LossKind::InfoNce).forward(
            &t2(&[[1.0, 0.0], [0.0, 1.0]]),
            // Scaled copies: normalisation inside the loss must undo the factor 3.
            &(t2(&[[0.6, 0.8], [0.0, 1.0]]) * 3.0),
            &Tensor::from(0.0f64),
            None,
        );
        assert!((l.double_value(&[]) - 0.5367568441918231).abs() < 1e-12);
    }

    #[test]
    fn siglip_hand_computed_2x2() {
        // I = T = eye(2), s = exp(0) = 1, b = −1: logits = [[0, −1], [−1, 0]],
        // labels·logits = [[0, 1], [1, 0]]; −logsigmoid(0) = ln 2, −logsigmoid(1) = ln(1 + e^−1).
        // loss = (2·0.6931471805599453 + 2·0.3132616875182228) / 2 = 1.0064088680781682
        let eye = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let l = loss(LossKind::Siglip).forward(
            &eye,
            &eye,
            &Tensor::from(0.0f64),
            Some(&Tensor::from(-1.0f64)),
        );
        assert!((l.double_value(&[]) - 1.0064088680781682).abs() < 1e-12);
    }

    #[test]
    fn aligned_features_loss_vanishes_as_scale_grows() {
        let f = Tensor::eye(3, F64);
        for kind in [LossKind::InfoNce, LossKind::Siglip] {
            let mut prev = f64::INFINITY;
            for s in [1.0f64, 10.0, 100.0] {
                // SigLIP's bias at −s/2 puts positives at +s/2 and negatives at −s/2; InfoNCE
                // needs none (softmax ignores a shared shift).
                let bias = Tensor::from(-s / 2.0);
                let l = loss(kind)
                    .forward(&f, &f, &Tensor::from(s.ln()), Some(&bias))
                    .double_value(&[]);
                assert!(l < prev, "{kind:?}: loss {l} did not decrease at scale {s}");
                prev = l;
            }
            assert!(prev < 1e-20, "{kind:?}: loss {prev} at scale 100");
        }
    }

    /// Central finite differences of `f` at `x` (f64), one element at a time.
    fn numeric_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> f64) -> Tensor {
        let h = 1e-6;
        let flat = x.flatten(0, -1);
        let mut out = vec![0.0f64; flat.numel()];
        for (i, o) in out.iter_mut().enumerate() {
            let base = flat.double_value(&[i as i64]);
            let at = |v: f64| {
                let y = flat.copy();
                let _ = y.get(i as i64).fill_(v);
                f(&y.view_as(x))
            };
            *o = (at(base + h) - at(base - h)) / (2.0 * h);
        }
        Tensor::from_slice(&out).view_as(x)
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-300)
    }

    #[test]
    fn gradients_match_finite_differences() {
        // Fixed values, not the global RNG (shared with tests that rely on seeding it).
        let wave = |k: f64| (Tensor::arange(12, F64) * k + 0.3).sin().view([3, 4]);
        let img = wave(1.7).set_requires_grad(true);
        let txt = wave(2.9).set_requires_grad(true);
        let scale = Tensor::from(1.3f64).set_requires_grad(true);
        let bias = Tensor::from(-0.7f64).set_requires_grad(true);
        for kind in [LossKind::InfoNce, LossKind::Siglip] {
            let l = loss(kind);
            for t in [&img, &txt, &scale, &bias] {
                t.shallow_clone().zero_grad();
            }
            l.forward(&img, &txt, &scale, Some(&bias)).backward();
            let eval = |i: &Tensor, t: &Tensor, s: &Tensor, b: &Tensor| {
                tch::no_grad(|| l.forward(i, t, s, Some(b)).double_value(&[]))
            };
            let checks = [
                (
                    "image",
                    img.grad(),
                    numeric_grad(&img, &|x| eval(x, &txt, &scale, &bias)),
                ),
                (
                    "text",
                    txt.grad(),
                    numeric_grad(&txt, &|x| eval(&img, x, &scale, &bias)),
                ),
                (
                    "scale",
                    scale.grad(),
                    numeric_grad(&scale, &|x| eval(&img, &txt, x, &bias)),
                ),
                (
                    "bias",
                    bias.grad(),
                    numeric_grad(&bias, &|x| eval(&img, &txt, &scale, x)),
                ),
            ];
            for (name, analytic, numeric) in checks {
                if kind == LossKind::InfoNce && name == "bias" {
                    // A shared shift cancels in the softmax: the derivative is exactly 0 (up to
                    // rounding), so a relative error is meaningless.
                    let g = analytic.abs().double_value(&[]);
                    assert!(g < 1e-12 && numeric.abs().double_value(&[]) < 1e-8, "{g}");
                    continue;
                }
                let e = rel_err(&analytic, &numeric);
                assert!(e < 1e-6, "{kind:?} d/d{name}: relative error {e}");
            }
        }
    }

    /// Labels [0, 0, 1]: pairs (0, 1) and (1, 0) leave the loss; by hand, InfoNCE's rows then
    /// soften over the remaining columns and SigLIP's sum drops two terms.
    #[test]
    fn masking_same_class_pairs_removes_them_from_the_loss() {
        let img = t2(&[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]);
        let txt = t2(&[[0.8, 0.6], [1.0, 0.0], [0.28, 0.96]]);
        let (scale, bias) = (Tensor::from(0.5f64), Tensor::from(-0.3f64));
        let classes = Tensor::from_slice(&[0i64, 0, 1]);
        let s = 0.5f64.exp();
        let dot = |a: usize, b: usize, x: &Tensor, y: &Tensor| {
            (x.get(a as i64) * y.get(b as i64))
                .sum(Kind::Double)
                .double_value(&[])
                * s
        };
        let keep = |i: usize, j: usize| i == j || [0, 0, 1][i] != [0, 0, 1][j];
        let ce = |x: &Tensor, y: &Tensor| {
            (0..3)
                .map(|i| {
                    let lse = (0..3)
                        .filter(|&j| keep(i, j))
                        .map(|j| dot(i, j, x, y).exp())
                        .sum::<f64>()
                        .ln();
                    lse - dot(i, i, x, y)
                })
                .sum::<f64>()
                / 3.0
        };
        let want = (ce(&img, &txt) + ce(&txt, &img)) / 2.0;
        let got = loss(LossKind::InfoNce)
            .forward_classes(&img, &txt, (0, 3), (&scale, None), Some(&classes))
            .double_value(&[]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let unmasked = loss(LossKind::InfoNce).forward(&img, &txt, &scale, None);
        assert!((unmasked.double_value(&[]) - want).abs() > 1e-3);

        let sig = |z: f64| -(1.0 + (-z).exp()).ln();
        let mut sum = 0.0;
        for i in 0..3 {
            for j in (0..3).filter(|&j| keep(i, j)) {
                let y = if i == j { 1.0 } else { -1.0 };
                sum += sig(y * (dot(i, j, &img, &txt) - 0.3));
            }
        }
        let want = -sum / 3.0;
        let got = loss(LossKind::Siglip)
            .forward_classes(&img, &txt, (0, 3), (&scale, Some(&bias)), Some(&classes))
            .double_value(&[]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn local_losses_over_a_partition_sum_to_world_times_the_global_loss() {
        let wave = |k: f64| (Tensor::arange(24, F64) * k + 0.3).sin().view([6, 4]);
        let (img, txt) = (wave(1.3), wave(2.1));
        let scale = Tensor::from(0.9f64);
        let bias = Tensor::from(-0.4f64);
        for kind in [LossKind::InfoNce, LossKind::Siglip] {
            let l = loss(kind);
            let global = l.forward(&img, &txt, &scale, Some(&bias)).double_value(&[]);
            for w in [1i64, 2, 3] {
                let sum: f64 = (0..w)
                    .map(|r| {
                        l.forward_local(&img, &txt, r * 6 / w, 6 / w, &scale, Some(&bias))
                            .double_value(&[])
                    })
                    .sum();
                assert!(
                    (sum - w as f64 * global).abs() < 1e-12,
                    "{kind:?} w={w}: {sum} vs {}",
                    w as f64 * global
                );
            }
        }
    }

    #[test]
    fn clamp_keeps_scale_in_range() {
        let s = Tensor::from(7.0f32).set_requires_grad(true);
        loss(LossKind::InfoNce).clamp_logit_scale(&s);
        assert!((s.double_value(&[]) - 100f64.ln()).abs() < 1e-6);
        assert!(s.requires_grad());
        let s = Tensor::from(-1.0f32);
        loss(LossKind::InfoNce).clamp_logit_scale(&s);
        assert_eq!(s.double_value(&[]), 0.0);
    }
}

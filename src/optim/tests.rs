use tch::{Device, Kind, Reduction, Tensor, nn};

use super::*;
use crate::config::OptimConfig;

fn cfg() -> OptimConfig {
    OptimConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-6,
        weight_decay: 0.2,
        ..OptimConfig::default()
    }
}

/// `cfg()` with the kernel chosen: `fused` true is ATen's fused kernel, false the per-tensor one.
fn kernel(fused: bool) -> OptimConfig {
    OptimConfig { fused, ..cfg() }
}

const KERNELS: [bool; 2] = [true, false];

fn no_decay(name: &str) -> bool {
    name.ends_with("bias")
}

/// Pseudo-random but RNG-free values: libtorch's global generator is shared by tests running
/// in parallel, so seeding it here would not make these tests deterministic.
fn det(shape: &[i64], seed: i64, scale: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    (Tensor::arange(n, (Kind::Float, Device::Cpu)) * (1.3 + 0.37 * seed as f64) + seed as f64)
        .sin()
        .view(shape)
        * scale
}

/// A 2-layer MLP in a fresh VarStore, its weights a function of `seed`.
fn mlp(seed: i64) -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let _ = (&r / "fc1").var_copy("weight", &det(&[6, 4], seed, 0.5));
    let _ = (&r / "fc1").var_copy("bias", &det(&[6], seed + 10, 0.1));
    let _ = (&r / "fc2").var_copy("weight", &det(&[3, 6], seed + 20, 0.5));
    let _ = (&r / "fc2").var_copy("bias", &det(&[3], seed + 30, 0.1));
    vs
}

fn params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables().into_iter().collect()
}

fn loss(vs: &nn::VarStore) -> Tensor {
    let v = vs.variables();
    let x = det(&[5, 4], 99, 1.0);
    let y = det(&[5, 3], 98, 1.0);
    x.linear(&v["fc1.weight"], Some(&v["fc1.bias"]))
        .gelu("none")
        .linear(&v["fc2.weight"], Some(&v["fc2.bias"]))
        .mse_loss(&y, Reduction::Mean)
}

fn train(vs: &nn::VarStore, opt: &mut AdamW, steps: u64) {
    for _ in 0..steps {
        opt.zero_grad();
        loss(vs).backward();
        let lr = 1e-2 / (1 + opt.steps()) as f64;
        opt.step(lr, None);
    }
}

#[test]
fn resume_from_safetensors_is_bit_identical() {
    for fused in KERNELS {
        resume_is_bit_identical(&kernel(fused));
    }
}

fn resume_is_bit_identical(cfg: &OptimConfig) {
    let dir = tempfile::tempdir().unwrap();
    let full = mlp(1);
    let mut opt = AdamW::new(params(&full), cfg, no_decay);
    train(&full, &mut opt, 10);

    let first = mlp(1);
    let mut opt1 = AdamW::new(params(&first), cfg, no_decay);
    train(&first, &mut opt1, 5);
    let (wpath, spath) = (
        dir.path().join("w.safetensors"),
        dir.path().join("opt.safetensors"),
    );
    first.save(&wpath).unwrap();
    let state = opt1.state_tensors();
    let named: Vec<(&str, &Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &spath).unwrap();
    drop((first, opt1));

    let mut resumed = mlp(2); // different init, overwritten by the load
    resumed.load(&wpath).unwrap();
    let mut opt2 = AdamW::new(params(&resumed), cfg, no_decay);
    opt2.load_state(Tensor::read_safetensors(&spath).unwrap())
        .unwrap();
    assert_eq!(opt2.steps(), 5);
    train(&resumed, &mut opt2, 5);

    let (a, b) = (full.variables(), resumed.variables());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after resume ({cfg:?})");
    }
    for ((n1, t1), (n2, t2)) in opt.state_tensors().iter().zip(opt2.state_tensors().iter()) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2), "state {n1} differs after resume");
    }
}

#[test]
fn load_state_reports_missing_unexpected_and_mismatched() {
    let vs = mlp(1);
    let mut opt = AdamW::new(params(&vs), &cfg(), no_decay);
    let mut state: Vec<(String, Tensor)> = opt
        .state_tensors()
        .into_iter()
        .filter(|(n, _)| n != "exp_avg.fc1.bias")
        .collect();
    state.push((
        "exp_avg.nope".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    for (n, t) in state.iter_mut() {
        if n == "exp_avg_sq.fc2.weight" {
            *t = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        }
    }
    let err = opt.load_state(state).unwrap_err().to_string();
    assert!(err.contains("missing [exp_avg.fc1.bias]"), "{err}");
    assert!(err.contains("unexpected [exp_avg.nope]"), "{err}");
    assert!(
        err.contains("exp_avg_sq.fc2.weight: shape [2, 2], expected [3, 6]"),
        "{err}"
    );
}

#[test]
fn frozen_params_untouched_and_no_decay_group_not_decayed() {
    for fused in KERNELS {
        frozen_and_no_decay(&kernel(fused));
    }
}

fn frozen_and_no_decay(cfg: &OptimConfig) {
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let w = r.ones("w", &[3]);
    let b = (&r / "b").ones("bias", &[3]);
    let frozen = r.ones("frozen", &[3]);
    let _ = frozen.set_requires_grad(false);
    let mut opt = AdamW::new(params(&vs), cfg, no_decay);
    assert_eq!(opt.no_decay_names(), vec!["b.bias"]);
    // Zero gradients: the Adam update is exactly 0 (m = 0), so only weight decay moves weights.
    ((&w + &b + &frozen).sum(Kind::Float) * 0.0).backward();
    assert!(!frozen.grad().defined());
    opt.step(0.5, None);
    let expect = (1.0 - 0.5 * 0.2f64) as f32;
    assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![expect; 3]);
    assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![1.0; 3]);
    assert_eq!(Vec::<f32>::try_from(&frozen).unwrap(), vec![1.0; 3]);
    // The frozen parameter has no state at all; the others took one step.
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(!names.iter().any(|n| n.ends_with("frozen")), "{names:?}");
    opt.zero_grad();
    assert!(!w.grad().defined());
    // No grad at all: nothing changes, not even by weight decay.
    opt.step(0.5, None);
    assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![expect; 3]);
}

#[test]
fn clip_grad_norm_returns_norm_and_scales() {
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let a = r.zeros("a", &[2]);
    let b = r.zeros("b", &[1]);
    // grads: a = [3, 0], b = [4] → global norm 5.
    (a.dot(&Tensor::from_slice(&[3.0f32, 0.0])) + (&b * 4.0).sum(Kind::Float)).backward();
    let mut opt = AdamW::new(params(&vs), &cfg(), no_decay);
    let clip = |opt: &mut AdamW, max: f64| {
        let norm = opt.clip_grad_norm(max);
        assert_eq!((norm.kind(), norm.size()), (Kind::Float, vec![]));
        norm.double_value(&[])
    };
    assert!((clip(&mut opt, 0.0) - 5.0).abs() < 1e-6);
    assert!((clip(&mut opt, 10.0) - 5.0).abs() < 1e-6); // below max: unchanged (factor clamped to 1)
    assert_eq!(Vec::<f32>::try_from(&b.grad()).unwrap(), vec![4.0]);
    assert!((clip(&mut opt, 1.0) - 5.0).abs() < 1e-6);
    let coef = 1.0 / (5.0 + 1e-6);
    let ga = Vec::<f32>::try_from(&a.grad()).unwrap();
    assert!(
        (ga[0] as f64 - 3.0 * coef).abs() < 1e-6 && ga[1] == 0.0,
        "{ga:?}"
    );
    let gb = Vec::<f32>::try_from(&b.grad()).unwrap();
    assert!((gb[0] as f64 - 4.0 * coef).abs() < 1e-6, "{gb:?}");
    assert!((clip(&mut opt, 0.0) - 1.0).abs() < 1e-5);
    opt.zero_grad();
    assert_eq!(clip(&mut opt, 1.0), 0.0); // no gradient at all
}

#[test]
fn clip_grad_norm_matches_a_hand_computed_norm() {
    let vs = mlp(3);
    let mut opt = AdamW::new(params(&vs), &cfg(), no_decay);
    loss(&vs).backward();
    let grads: Vec<Tensor> = vs.variables().values().map(Tensor::grad).collect();
    let squares: f64 = grads
        .iter()
        .flat_map(|g| Vec::<f32>::try_from(&g.flatten(0, -1)).unwrap())
        .map(|x| (x as f64).powi(2))
        .sum();
    let expect = squares.sqrt();
    let before: Vec<Tensor> = grads.iter().map(Tensor::copy).collect();
    let norm = opt.clip_grad_norm(expect / 4.0).double_value(&[]);
    assert!((norm - expect).abs() < 1e-6 * expect, "{norm} vs {expect}");
    let coef = expect / 4.0 / (norm + 1e-6);
    for (g, b) in grads.iter().zip(&before) {
        let diff = (g - b * coef).abs().max().double_value(&[]);
        assert!(diff < 1e-7, "clipped gradient off by {diff:e}");
    }
}

#[test]
fn a_step_flagged_found_inf_changes_nothing() {
    for fused in KERNELS {
        let vs = mlp(5);
        let mut opt = AdamW::new(params(&vs), &kernel(fused), no_decay);
        train(&vs, &mut opt, 2);
        let snapshot = |vs: &nn::VarStore, opt: &AdamW| -> Vec<(String, Tensor)> {
            let mut all: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.copy()))
                .collect();
            all.extend(opt.state_tensors().into_iter().map(|(n, t)| (n, t.copy())));
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let before = snapshot(&vs, &opt);
        opt.zero_grad();
        loss(&vs).backward();
        opt.step(1e-2, Some(&Tensor::ones([1], (Kind::Float, Device::Cpu))));
        assert_eq!(opt.steps(), 2, "fused {fused}");
        for ((name, b), (_, a)) in before.iter().zip(&snapshot(&vs, &opt)) {
            assert!(
                b.equal(a),
                "{name} changed on a skipped step (fused {fused})"
            );
        }
        // The same gradients with the flag clear do take the step.
        opt.step(1e-2, Some(&Tensor::zeros([1], (Kind::Float, Device::Cpu))));
        assert_eq!(opt.steps(), 3);
        let after = snapshot(&vs, &opt);
        assert!(!before[0].1.equal(&after[0].1), "{}", before[0].0);
        let step_fc1 = after.iter().find(|(n, _)| n == "step.fc1.weight").unwrap();
        assert_eq!(step_fc1.1.int64_value(&[]), 3);
    }
}

/// Max |a − b| over the variables of two stores with the same names.
fn max_diff(a: &nn::VarStore, b: &nn::VarStore) -> f64 {
    let (a, b) = (a.variables(), b.variables());
    a.iter()
        .map(|(n, t)| (t - &b[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn fused_and_per_tensor_kernels_agree() {
    let scales = |n: &str| if n.starts_with("fc1") { 0.5 } else { 1.0 };
    let (a, b) = (mlp(6), mlp(6));
    let mut fused = AdamW::new(params(&a), &kernel(true), no_decay);
    let mut reference = AdamW::new(params(&b), &kernel(false), no_decay);
    fused.set_lr_scales(scales);
    reference.set_lr_scales(scales);
    assert!(fused.is_fused() && !reference.is_fused());
    train(&a, &mut fused, 8);
    train(&b, &mut reference, 8);
    let diff = max_diff(&a, &b);
    assert!(diff < 1e-6, "fused vs per-tensor after 8 steps: {diff:e}");
}

#[test]
fn per_tensor_state_loads_into_the_fused_kernel_and_continues() {
    let (a, b) = (mlp(7), mlp(7));
    let mut reference = AdamW::new(params(&a), &kernel(false), no_decay);
    train(&a, &mut reference, 5);
    let state: Vec<(String, Tensor)> = reference
        .state_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    tch::no_grad(|| {
        for (n, t) in a.variables() {
            b.variables()[&n].shallow_clone().copy_(&t);
        }
    });
    let mut fused = AdamW::new(params(&b), &kernel(true), no_decay);
    fused.load_state(state).unwrap();
    assert_eq!(fused.steps(), 5);
    train(&a, &mut reference, 5);
    train(&b, &mut fused, 5);
    let diff = max_diff(&a, &b);
    assert!(diff < 1e-6, "per-tensor → fused resume: {diff:e}");
    for ((n1, t1), (n2, t2)) in reference.state_tensors().iter().zip(&fused.state_tensors()) {
        assert_eq!(n1, n2);
        let d = (t1.to_kind(Kind::Double) - t2.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-6, "{n1}: {d:e}");
    }
}

#[test]
fn bf16_parameters_are_updated_in_fp32_by_both_kernels() {
    let vs: Vec<nn::VarStore> = KERNELS
        .iter()
        .map(|_| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let _ = vs.root().var_copy("w", &det(&[8], 1, 1.0));
            vs.bfloat16();
            vs
        })
        .collect();
    for (vs, fused) in vs.iter().zip(KERNELS) {
        let mut opt = AdamW::new(params(vs), &kernel(fused), no_decay);
        for _ in 0..3 {
            opt.zero_grad();
            (vs.variables()["w"].to_kind(Kind::Float) * det(&[8], 2, 1.0))
                .sum(Kind::Float)
                .backward();
            opt.step(1e-1, None);
        }
        assert_eq!(vs.variables()["w"].kind(), Kind::BFloat16);
    }
    // The kernels round differently in fp32; after the cast to bf16 they agree to its precision.
    let diff = max_diff(&vs[0], &vs[1]);
    assert!(diff <= 1e-2, "fused vs per-tensor on bf16: {diff:e}");
    let start = det(&[8], 1, 1.0).to_kind(Kind::BFloat16);
    assert!(
        !vs[0].variables()["w"].equal(&start),
        "the fused step moved nothing"
    );
}

#[test]
fn amp_unscale_divides_by_the_scale_and_flags_non_finite_grads() {
    let opts = (Kind::Float, Device::Cpu);
    let grads = [
        Tensor::from_slice(&[2.0f32, 4.0]),
        Tensor::from_slice(&[8.0f32]),
    ];
    let found_inf = Tensor::zeros([1], opts);
    let inv_scale = Tensor::full([1], 0.5, opts);
    crate::shim::amp_unscale_(&grads, &found_inf, &inv_scale).unwrap();
    assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, 2.0]);
    assert_eq!(Vec::<f32>::try_from(&grads[1]).unwrap(), vec![4.0]);
    assert_eq!(found_inf.double_value(&[0]), 0.0);
    for bad in [f32::INFINITY, f32::NAN] {
        let grads = [Tensor::from_slice(&[1.0f32, bad])];
        let found_inf = Tensor::zeros([1], opts);
        crate::shim::amp_unscale_(&grads, &found_inf, &inv_scale).unwrap();
        assert_eq!(found_inf.double_value(&[0]), 1.0, "{bad}");
    }
    // A flag already set stays set with finite gradients: one flag collects several calls.
    let found_inf = Tensor::ones([1], opts);
    crate::shim::amp_unscale_(&grads, &found_inf, &inv_scale).unwrap();
    assert_eq!(found_inf.double_value(&[0]), 1.0);
    // libtorch's refusal comes back as an error, not an abort.
    let err = crate::shim::amp_unscale_(&grads, &found_inf, &Tensor::ones([2], opts));
    assert!(
        err.unwrap_err().contains("1-element"),
        "a two-element scale is refused"
    );
}

#[test]
fn lr_scales_act_as_a_param_group_learning_rate() {
    for fused in KERNELS {
        lr_scales_act_as_group_lr(&kernel(fused));
    }
}

fn lr_scales_act_as_group_lr(cfg: &OptimConfig) {
    // One step (later steps couple the parameters through the loss): fc1 at scale 0.5 under
    // lr 2x must match an unscaled step at lr x bit for bit (0.5 and 2 are exact in binary);
    // fc2 at scale 1 under lr 2x must not.
    let step_at = |vs: &nn::VarStore, opt: &mut AdamW, lr: f64| {
        opt.zero_grad();
        loss(vs).backward();
        opt.step(lr, None);
    };
    let one = mlp(4);
    let mut o1 = AdamW::new(params(&one), cfg, no_decay);
    o1.set_lr_scales(|n| if n.starts_with("fc1") { 0.5 } else { 1.0 });
    step_at(&one, &mut o1, 2e-2);
    let two = mlp(4);
    let mut o2 = AdamW::new(params(&two), cfg, no_decay);
    step_at(&two, &mut o2, 1e-2);
    let (a, b) = (one.variables(), two.variables());
    assert!(a["fc1.weight"].equal(&b["fc1.weight"]));
    assert!(a["fc1.bias"].equal(&b["fc1.bias"]));
    assert!(!a["fc2.weight"].equal(&b["fc2.weight"]));
}

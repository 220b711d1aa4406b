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
        opt.step(lr);
    }
}

#[test]
fn resume_from_safetensors_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let full = mlp(1);
    let mut opt = AdamW::new(params(&full), &cfg(), no_decay);
    train(&full, &mut opt, 10);

    let first = mlp(1);
    let mut opt1 = AdamW::new(params(&first), &cfg(), no_decay);
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
    let mut opt2 = AdamW::new(params(&resumed), &cfg(), no_decay);
    opt2.load_state(Tensor::read_safetensors(&spath).unwrap())
        .unwrap();
    assert_eq!(opt2.steps(), 5);
    train(&resumed, &mut opt2, 5);

    let (a, b) = (full.variables(), resumed.variables());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after resume");
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
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let w = r.ones("w", &[3]);
    let b = (&r / "b").ones("bias", &[3]);
    let frozen = r.ones("frozen", &[3]);
    let _ = frozen.set_requires_grad(false);
    let mut opt = AdamW::new(params(&vs), &cfg(), no_decay);
    assert_eq!(opt.no_decay_names(), vec!["b.bias"]);
    // Zero gradients: the Adam update is exactly 0 (m = 0), so only weight decay moves weights.
    ((&w + &b + &frozen).sum(Kind::Float) * 0.0).backward();
    assert!(!frozen.grad().defined());
    opt.step(0.5);
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
    opt.step(0.5);
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
    assert!((opt.clip_grad_norm(0.0) - 5.0).abs() < 1e-6);
    assert!((opt.clip_grad_norm(10.0) - 5.0).abs() < 1e-6); // below max: unchanged
    assert_eq!(Vec::<f32>::try_from(&b.grad()).unwrap(), vec![4.0]);
    assert!((opt.clip_grad_norm(1.0) - 5.0).abs() < 1e-6);
    let coef = 1.0 / (5.0 + 1e-6);
    let ga = Vec::<f32>::try_from(&a.grad()).unwrap();
    assert!(
        (ga[0] as f64 - 3.0 * coef).abs() < 1e-6 && ga[1] == 0.0,
        "{ga:?}"
    );
    let gb = Vec::<f32>::try_from(&b.grad()).unwrap();
    assert!((gb[0] as f64 - 4.0 * coef).abs() < 1e-6, "{gb:?}");
    assert!((opt.clip_grad_norm(0.0) - 1.0).abs() < 1e-5);
}

#[test]
fn lr_scales_act_as_a_param_group_learning_rate() {
    // One step (later steps couple the parameters through the loss): fc1 at scale 0.5 under
    // lr 2x must match an unscaled step at lr x bit for bit (0.5 and 2 are exact in binary);
    // fc2 at scale 1 under lr 2x must not.
    let step_at = |vs: &nn::VarStore, opt: &mut AdamW, lr: f64| {
        opt.zero_grad();
        loss(vs).backward();
        opt.step(lr);
    };
    let one = mlp(4);
    let mut o1 = AdamW::new(params(&one), &cfg(), no_decay);
    o1.set_lr_scales(|n| if n.starts_with("fc1") { 0.5 } else { 1.0 });
    step_at(&one, &mut o1, 2e-2);
    let two = mlp(4);
    let mut o2 = AdamW::new(params(&two), &cfg(), no_decay);
    step_at(&two, &mut o2, 1e-2);
    let (a, b) = (one.variables(), two.variables());
    assert!(a["fc1.weight"].equal(&b["fc1.weight"]));
    assert!(a["fc1.bias"].equal(&b["fc1.bias"]));
    assert!(!a["fc2.weight"].equal(&b["fc2.weight"]));
}

//! Our loss and AdamW against the Python references: open_clip's `ClipLoss`/`SigLipLoss` and
//! `torch.optim.AdamW` (single-tensor and fused), run by `scripts/loss_reference.py` /
//! `scripts/adamw_reference.py` with the torch venv's python. A missing venv or reference
//! package fails the test with the fix (`scripts/bootstrap.sh --ref`); it never skips.
use crate::common;
use crate::common::repo;
use std::process::Command;

use cliptrain::config::{LossConfig, LossKind, OptimConfig};
use cliptrain::loss::ClipLoss;
use cliptrain::optim::{AdamW, LrSchedule};
use tch::{Device, Kind, Reduction, Tensor, nn};

/// Runs a repo script with the venv python; a failure names the script and the fix.
fn run_script(script: &str, args: &[&str]) {
    let out = Command::new(common::venv_python())
        .arg(repo().join("scripts").join(script))
        .args(args)
        .output()
        .expect("run the venv python");
    assert!(
        out.status.success(),
        "scripts/{script} failed (the reference packages come from \
         `scripts/bootstrap.sh --ref`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &std::path::Path, tensors: &[(&str, &Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap();
}

fn read(path: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn losses_match_open_clip() {
    let dir = tempfile::tempdir().unwrap();
    let _rng = common::rng_lock();
    tch::manual_seed(3);
    let opts = (Kind::Double, Device::Cpu);
    let (image, text) = (Tensor::randn([8, 16], opts), Tensor::randn([8, 16], opts));
    let (scale, bias) = (Tensor::from(10f64.ln()), Tensor::from(-10.0f64));
    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write(
        &inp,
        &[
            ("image", &image),
            ("text", &text),
            ("logit_scale", &scale),
            ("logit_bias", &bias),
        ],
    );
    run_script(
        "loss_reference.py",
        &[inp.to_str().unwrap(), out.to_str().unwrap()],
    );
    let reference = read(&out);
    for (kind, key, b) in [
        (LossKind::InfoNce, "infonce", None),
        (LossKind::Siglip, "siglip", Some(&bias)),
    ] {
        let loss = ClipLoss::new(&LossConfig {
            kind,
            max_logit_scale: 100.0,
            mask_same_class: false,
        });
        let ours = loss.forward(&image, &text, &scale, b).double_value(&[]);
        let theirs = reference[key].double_value(&[]);
        println!(
            "{key}: ours {ours}, open_clip {theirs}, |diff| {:e}",
            (ours - theirs).abs()
        );
        assert!(
            (ours - theirs).abs() <= 1e-12 * theirs.abs().max(1.0),
            "{key}: ours {ours}, open_clip {theirs}"
        );
    }
}

#[test]
fn adamw_matches_torch_optim_adamw_after_10_steps() {
    // The per-tensor kernel against torch's single-tensor path, one learning rate for all.
    adamw_against_torch(false, 10, &[]);
}

#[test]
fn fused_adamw_matches_torch_fused_adamw_after_20_steps() {
    // The fused kernel against `AdamW(fused=True)`, with four param groups: decay / no decay,
    // each at learning-rate multiplier 1.0 (fc1) and 0.5 (fc2).
    adamw_against_torch(true, 20, &[("fc2.weight", 0.5), ("fc2.bias", 0.5)]);
}

/// Trains the same 2-layer MLP `steps` steps with our AdamW (`fused` kernel or not) and with
/// torch.optim.AdamW (`fused=True` or its single-tensor path) under a warmup + cosine schedule,
/// biases without weight decay and the given per-parameter LR multipliers, and compares weights.
fn adamw_against_torch(fused: bool, steps: u64, lr_scales: &[(&str, f64)]) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OptimConfig {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-6,
        weight_decay: 0.2,
        warmup_steps: 3,
        steps,
        min_lr: 1e-4,
        fused,
        ..OptimConfig::default()
    };
    // A changing learning rate (warmup, then cosine) also checks that lr enters each step.
    let schedule = LrSchedule::new(&cfg);
    let lrs: Vec<f64> = (0..steps).map(|s| schedule.lr_at(s)).collect();
    let lrs_t = Tensor::from_slice(&lrs);
    let _rng = common::rng_lock();
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let _ = (&r / "fc1").randn("weight", &[16, 8], 0.0, 0.3);
    let _ = (&r / "fc1").randn("bias", &[16], 0.0, 0.1);
    let _ = (&r / "fc2").randn("weight", &[4, 16], 0.0, 0.3);
    let _ = (&r / "fc2").randn("bias", &[4], 0.0, 0.1);
    let x = Tensor::randn([10, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
    let v = vs.variables();

    let (inp, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let scale_tensors: Vec<(String, Tensor)> = lr_scales
        .iter()
        .map(|(n, s)| (format!("lr_scale.{n}"), Tensor::from(*s)))
        .collect();
    let mut tensors: Vec<(&str, &Tensor)> = v.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tensors.extend([("x", &x), ("y", &y), ("lrs", &lrs_t)]);
    tensors.extend(scale_tensors.iter().map(|(n, t)| (n.as_str(), t)));
    write(&inp, &tensors);
    let args: Vec<String> = [cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay]
        .iter()
        .map(|a| format!("{a:e}"))
        .collect();
    let mut argv = vec![inp.to_str().unwrap(), out.to_str().unwrap()];
    argv.extend(args.iter().map(String::as_str));
    argv.push(if fused { "fused" } else { "single" });
    run_script("adamw_reference.py", &argv);

    let mut opt = AdamW::new(vs.variables().into_iter().collect(), &cfg, |n| {
        n.ends_with("bias")
    });
    opt.set_lr_scales(|name| {
        lr_scales
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(1.0, |(_, s)| *s)
    });
    for &lr in &lrs {
        opt.zero_grad();
        x.linear(&v["fc1.weight"], Some(&v["fc1.bias"]))
            .gelu("none")
            .linear(&v["fc2.weight"], Some(&v["fc2.bias"]))
            .mse_loss(&y, Reduction::Mean)
            .backward();
        opt.step(lr, None);
    }
    assert_eq!(opt.steps(), steps);
    let reference = read(&out);
    for (name, ours) in &v {
        let diff = (ours - &reference[name]).abs().max().double_value(&[]);
        assert!(
            diff < 1e-6,
            "{name}: max |ours − torch| = {diff:e} (fused {fused})"
        );
        println!("{name}: max |ours − torch| = {diff:e} (fused {fused})");
    }
}

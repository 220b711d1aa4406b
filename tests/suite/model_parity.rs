//! `ClipModel` against Hugging Face `transformers`' `CLIPModel`, both directions, fp32 on CPU.
//!
//! `scripts/hf_parity.py` (run with the torch venv's python) builds a tiny random HF model and
//! its outputs; we load its safetensors strictly and must reproduce them. Then the reverse: a
//! checkpoint we save must load into HF with `load_state_dict(strict=True)` and give our outputs.
//! Missing Python packages fail the test (they come with `scripts/bootstrap.sh --ref`), never
//! skip it.
use crate::common;
use cliptrain::model::{
    Activation, ClipModel, LoadMode, LogitHead, ModelKind, ModelSpec, TextConfig, VisionConfig,
    load_named,
};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn::VarStore};

const TOL: f64 = 1e-4;
const EOS: i64 = 98;

/// The model `scripts/hf_parity.py` builds, as our spec.
fn tiny_cfg(activation: Activation) -> ModelSpec {
    ModelSpec {
        kind: ModelKind::Clip,
        embed_dim: 40,
        activation,
        layer_norm_eps: 1e-5,
        vision: VisionConfig {
            image_size: 32,
            patch_size: 8,
            width: 64,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size: 99,
            context_length: 16,
            width: 48,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
            ..TextConfig::default()
        },
        eot_id: EOS,
        head: LogitHead::Clip,
    }
}

fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    }
}

fn hf_parity(args: &[&str]) -> String {
    common::reference("hf_parity.py", args)
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Every output the two sides compare, contiguous so it can be written.
fn our_outputs(m: &ClipModel, inputs: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let (px, ids) = (&inputs["pixel_values"], &inputs["input_ids"]);
    tch::no_grad(|| {
        let out = m.forward(px, ids);
        vec![
            ("text_embeds".into(), out.text_embeds),
            ("image_embeds".into(), out.image_embeds),
            ("logits_per_image".into(), out.logits_per_image.contiguous()),
            ("logits_per_text".into(), out.logits_per_text.contiguous()),
            ("text_features".into(), m.encode_text(ids)),
            ("image_features".into(), m.encode_image(px)),
        ]
    })
}

fn hf_to_ours(activation: Activation) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    hf_parity(&["make", d, "--act", act_name(activation)]);
    let _rng = common::rng_lock();
    let mut vs = VarStore::new(Device::Cpu);
    let m = ClipModel::new(&vs.root(), &tiny_cfg(activation)).unwrap();
    let weights = dir.path().join("model.safetensors");
    let tensors = Tensor::read_safetensors(&weights).unwrap();
    load_named(&mut vs, tensors, LoadMode::Strict, &weights).unwrap();
    let reference = read(&dir.path().join("outputs.safetensors"));
    let ours = our_outputs(&m, &read(&dir.path().join("inputs.safetensors")));
    assert_eq!(reference.len(), ours.len());
    for (name, t) in &ours {
        let r = &reference[name];
        assert_eq!(t.size(), r.size(), "{name}");
        let diff = (t - r).abs().max().double_value(&[]);
        println!(
            "HF -> ours, {}: {name} max abs diff {diff:.3e}",
            act_name(activation)
        );
        assert!(diff <= TOL, "{name}: max abs diff {diff} > {TOL}");
    }
}

#[test]
fn hf_weights_reproduce_hf_outputs_quick_gelu() {
    hf_to_ours(Activation::QuickGelu);
}

#[test]
fn hf_weights_reproduce_hf_outputs_gelu() {
    hf_to_ours(Activation::Gelu);
}

/// Captions with EOT at varied positions, padding after it (zeros, or EOT itself in row 2).
fn token_batch() -> Tensor {
    let ids = Tensor::randint_low(1, EOS - 1, [4, 16], (Kind::Int64, Device::Cpu));
    for (row, pos) in [(0i64, 3i64), (1, 15), (2, 7), (3, 10)] {
        let r = ids.get(row);
        let _ = r.get(pos).fill_(EOS);
        if pos < 15 {
            let _ = r
                .narrow(0, pos + 1, 15 - pos)
                .fill_(if row == 2 { EOS } else { 0 });
        }
    }
    ids
}

#[test]
fn our_checkpoint_loads_strictly_into_hf() {
    for activation in [Activation::QuickGelu, Activation::Gelu] {
        let _rng = common::rng_lock();
        tch::manual_seed(7);
        let dir = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let m = ClipModel::new(&vs.root(), &tiny_cfg(activation)).unwrap();
        // Move LayerNorms and biases off 1/0 so a swapped or dropped one would show.
        tch::no_grad(|| {
            for t in vs.variables().values_mut() {
                if t.dim() == 1 {
                    let _ = t.g_add_(&(t.randn_like() * 0.1));
                }
            }
        });
        vs.save(dir.path().join("model.safetensors")).unwrap();
        let inputs: HashMap<String, Tensor> = [
            (
                "pixel_values".to_string(),
                Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu)),
            ),
            ("input_ids".to_string(), token_batch()),
        ]
        .into_iter()
        .collect();
        let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Tensor::write_safetensors(&named, dir.path().join("inputs.safetensors")).unwrap();
        let outputs = our_outputs(&m, &inputs);
        Tensor::write_safetensors(&outputs, dir.path().join("outputs.safetensors")).unwrap();
        let d = dir.path().to_str().unwrap();
        let report = hf_parity(&["check", d, "--act", act_name(activation)]);
        println!("ours -> HF, {}: {}", act_name(activation), report.trim());
    }
}

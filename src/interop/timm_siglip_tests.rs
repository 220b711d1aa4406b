//! Unit tests of [`super`]: `timm_siglip.rs`.
use super::*;
use tch::{Device, Kind};

/// A two-layer SigLIP state dict under OpenCLIP's names, width 8, MLP 16, 4 patches,
/// vocabulary 10, context 5, joint width 8.
fn openclip_tensors() -> Vec<(String, Tensor)> {
    let r = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let mut t = vec![
        (
            "visual.trunk.patch_embed.proj.weight".into(),
            r(&[8, 3, 2, 2]),
        ),
        ("visual.trunk.patch_embed.proj.bias".into(), r(&[8])),
        ("visual.trunk.pos_embed".into(), r(&[1, 4, 8])),
        ("visual.trunk.norm.weight".into(), r(&[8])),
        ("visual.trunk.norm.bias".into(), r(&[8])),
        ("visual.trunk.attn_pool.latent".into(), r(&[1, 1, 8])),
        ("visual.trunk.attn_pool.q.weight".into(), r(&[8, 8])),
        ("visual.trunk.attn_pool.q.bias".into(), r(&[8])),
        ("visual.trunk.attn_pool.kv.weight".into(), r(&[16, 8])),
        ("visual.trunk.attn_pool.kv.bias".into(), r(&[16])),
        ("visual.trunk.attn_pool.proj.weight".into(), r(&[8, 8])),
        ("visual.trunk.attn_pool.proj.bias".into(), r(&[8])),
        ("visual.trunk.attn_pool.norm.weight".into(), r(&[8])),
        ("visual.trunk.attn_pool.norm.bias".into(), r(&[8])),
        ("visual.trunk.attn_pool.mlp.fc1.weight".into(), r(&[16, 8])),
        ("visual.trunk.attn_pool.mlp.fc1.bias".into(), r(&[16])),
        ("visual.trunk.attn_pool.mlp.fc2.weight".into(), r(&[8, 16])),
        ("visual.trunk.attn_pool.mlp.fc2.bias".into(), r(&[8])),
        ("text.token_embedding.weight".into(), r(&[10, 8])),
        ("text.positional_embedding".into(), r(&[5, 8])),
        ("text.ln_final.weight".into(), r(&[8])),
        ("text.ln_final.bias".into(), r(&[8])),
        ("text.text_projection.weight".into(), r(&[8, 8])),
        ("text.text_projection.bias".into(), r(&[8])),
        ("logit_scale".into(), r(&[])),
        ("logit_bias".into(), r(&[])),
    ];
    for i in 0..2 {
        for (prefix, names) in [
            (
                format!("visual.trunk.blocks.{i}."),
                [
                    "attn.qkv",
                    "norm1",
                    "norm2",
                    "attn.proj",
                    "mlp.fc1",
                    "mlp.fc2",
                ],
            ),
            (
                format!("text.transformer.resblocks.{i}."),
                [
                    "attn.in_proj_",
                    "ln_1",
                    "ln_2",
                    "attn.out_proj",
                    "mlp.c_fc",
                    "mlp.c_proj",
                ],
            ),
        ] {
            let fused = names[0];
            let sep = if fused.ends_with('_') { "" } else { "." };
            t.push((format!("{prefix}{fused}{sep}weight"), r(&[24, 8])));
            t.push((format!("{prefix}{fused}{sep}bias"), r(&[24])));
            for n in &names[1..3] {
                t.push((format!("{prefix}{n}.weight"), r(&[8])));
                t.push((format!("{prefix}{n}.bias"), r(&[8])));
            }
            t.push((format!("{prefix}{}.weight", names[3]), r(&[8, 8])));
            t.push((format!("{prefix}{}.bias", names[3]), r(&[8])));
            t.push((format!("{prefix}{}.weight", names[4]), r(&[16, 8])));
            t.push((format!("{prefix}{}.bias", names[4]), r(&[16])));
            t.push((format!("{prefix}{}.weight", names[5]), r(&[8, 16])));
            t.push((format!("{prefix}{}.bias", names[5]), r(&[8])));
        }
    }
    t
}

#[test]
fn names_and_layouts_map_both_ways_without_loss() {
    let oc = openclip_tensors();
    assert!(is_timm_siglip(oc.iter().map(|(n, _)| n.as_str())));
    let ours: BTreeMap<String, Tensor> = to_hf(
        oc.iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
    )
    .into_iter()
    .collect();
    // Every name is ours: HF SiglipModel's tree.
    for name in ours.keys() {
        assert!(
            name.starts_with("vision_model.")
                || name.starts_with("text_model.")
                || name.starts_with("logit_"),
            "{name} was not mapped"
        );
    }
    // q/k/v of 2 blocks × 2 towers × (weight, bias) split 1 → 3; the pooling head's q and kv
    // fuse 2 → 1 (weight, bias).
    assert_eq!(ours.len(), oc.len() + 2 * 2 * 2 * 2 - 2);
    let pos = &ours["vision_model.embeddings.position_embedding.weight"];
    assert_eq!(pos.size(), [4, 8]);
    assert_eq!(ours["logit_bias"].size(), [1]);
    let in_proj = &ours["vision_model.head.attention.in_proj_weight"];
    assert_eq!(in_proj.size(), [24, 8]);
    let oc_map: BTreeMap<&str, &Tensor> = oc.iter().map(|(n, t)| (n.as_str(), t)).collect();
    assert!(
        in_proj
            .narrow(0, 0, 8)
            .equal(oc_map["visual.trunk.attn_pool.q.weight"])
    );
    let k = &ours["text_model.encoder.layers.1.self_attn.k_proj.weight"];
    assert!(k.equal(&oc_map["text.transformer.resblocks.1.attn.in_proj_weight"].narrow(0, 8, 8)));
    let fc2 = &ours["vision_model.encoder.layers.0.mlp.fc2.bias"];
    assert!(fc2.equal(oc_map["visual.trunk.blocks.0.mlp.fc2.bias"]));

    let ours_vec: Vec<(String, Tensor)> = ours.into_iter().collect();
    let back: BTreeMap<String, Tensor> = from_hf(&ours_vec).into_iter().collect();
    assert_eq!(back.len(), oc.len());
    for (n, t) in &oc {
        assert_eq!(back[n].size(), t.size(), "{n}");
        assert!(back[n].equal(t), "{n} changed");
    }
}

#[test]
fn unknown_or_misshaped_tensors_keep_their_names() {
    let r = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let mapped = to_hf(vec![
        ("visual.trunk.blocks.0.attn.qkv.weight".into(), r(&[7, 8])),
        ("visual.trunk.attn_pool.q.weight".into(), r(&[8, 8])),
        ("visual.trunk.cls_token".into(), r(&[1, 1, 8])),
    ]);
    let names: Vec<&str> = mapped.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "visual.trunk.blocks.0.attn.qkv.weight",
            "visual.trunk.cls_token",
            "visual.trunk.attn_pool.q.weight"
        ]
    );
    assert!(!is_timm_siglip(["visual.conv1.weight"].into_iter()));
}

/// HF's `google/siglip-base-patch16-224` dimensions with `activation`.
fn base_224(activation: Activation) -> ModelSpec {
    ModelSpec {
        kind: ModelKind::Siglip,
        embed_dim: 768,
        activation,
        layer_norm_eps: 1e-6,
        vision: VisionConfig {
            image_size: 224,
            patch_size: 16,
            width: 768,
            layers: 12,
            heads: 12,
            mlp_ratio: 4.0,
            ..Default::default()
        },
        text: TextConfig {
            vocab_size: 32000,
            context_length: 64,
            width: 768,
            layers: 12,
            heads: 12,
            ..Default::default()
        },
        eot_id: 1,
        head: LogitHead::Siglip,
    }
}

#[test]
fn an_export_names_the_timm_trunk_or_says_why_not() {
    let cfg = model_cfg(&base_224(Activation::Gelu), -10.0).unwrap();
    let v = &cfg["vision_cfg"];
    assert_eq!(v["timm_model_name"], "vit_base_patch16_siglip_224");
    assert_eq!(
        (&v["timm_pool"], &v["timm_proj"]),
        (&json!("map"), &json!("none"))
    );
    let t = &cfg["text_cfg"];
    assert_eq!(t["pool_type"], "last");
    assert_eq!(
        (&t["no_causal_mask"], &t["proj_bias"]),
        (&json!(true), &json!(true))
    );
    assert!(
        t.get("act_kwargs").is_none(),
        "exact GELU is OpenCLIP's default"
    );
    assert_eq!(cfg["init_logit_bias"], -10.0);

    let mut mixed = base_224(Activation::Gelu);
    mixed.text.activation = Some(Activation::GeluTanh);
    let cfg = model_cfg(&mixed, -10.0).unwrap();
    assert_eq!(cfg["text_cfg"]["act_kwargs"]["approximate"], "tanh");

    let tanh = model_cfg(&base_224(Activation::GeluTanh), -10.0).unwrap_err();
    assert!(tanh.contains("export hf"), "{tanh}");
    let mut odd = base_224(Activation::Gelu);
    odd.vision.image_size = 288;
    let err = model_cfg(&odd, -10.0).unwrap_err();
    assert!(
        err.contains("288 pixels") && err.contains("vit_so400m_patch14_siglip_378"),
        "{err}"
    );
}

#[test]
fn header_shapes_map_as_the_tensors_do() {
    let oc = openclip_tensors();
    let shapes = oc
        .iter()
        .map(|(n, t)| (n.clone(), t.size().iter().map(|&d| d as u64).collect()))
        .collect();
    let want: BTreeMap<String, Vec<u64>> = to_hf(oc)
        .into_iter()
        .map(|(n, t)| (n, t.size().iter().map(|&d| d as u64).collect()))
        .collect();
    assert_eq!(hf_shapes(shapes), want);
}

#[test]
fn a_pooling_pair_that_does_not_stack_maps_to_nothing_in_the_header() {
    let shapes = BTreeMap::from([
        ("visual.trunk.attn_pool.q.weight".to_string(), vec![]),
        ("visual.trunk.attn_pool.kv.weight".to_string(), vec![16, 8]),
        ("visual.trunk.attn_pool.q.bias".to_string(), vec![8]),
        ("visual.trunk.attn_pool.kv.bias".to_string(), vec![]),
    ]);
    assert!(hf_shapes(shapes).is_empty());
}

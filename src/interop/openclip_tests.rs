//! Unit tests of [`super`]: `openclip.rs`.
use super::*;
use crate::config::{LossKind, ModelConfig};
use crate::model::ClipModel;
use tch::{Device, nn};

#[test]
fn mlp_ratios_truncate_as_open_clip_and_export_round_trips() {
    for ratio in [4.0, 4.9231, 3.7362, 2.6667, 3.99, 8.5715, 4.3637, 2.0, 5.5] {
        for width in (1..=2048).step_by(7) {
            let want = (width as f64 * ratio) as usize;
            let ours = openclip_mlp_ratio(width, ratio);
            assert_eq!(mlp_width(width, ours), want, "width {width} ratio {ratio}");
            let written = export_mlp_ratio(width, ours);
            assert_eq!((width as f64 * written) as usize, want, "written {written}");
            assert_eq!(mlp_width(width, openclip_mlp_ratio(width, written)), want);
        }
    }
    assert_eq!(
        export_mlp_ratio(768, 4.0),
        4.0,
        "common ratios stay readable"
    );
}

#[test]
fn names_map_both_ways_without_loss() {
    let mut cfg = ModelConfig::default();
    (cfg.vision.image_size, cfg.vision.patch_size) = (16, 8);
    (cfg.vision.width, cfg.vision.layers, cfg.vision.heads) = (8, 2, 2);
    (cfg.text.vocab_size, cfg.text.context_length) = (20, 6);
    (
        cfg.text.width,
        cfg.text.layers,
        cfg.text.heads,
        cfg.embed_dim,
    ) = (12, 2, 2, 4);
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = ClipModel::new(&vs.root(), &cfg.spec(19, LossKind::Siglip)).unwrap();
    let ours: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let oc = from_hf(&ours);
    let names: Vec<&str> = oc.iter().map(|(n, _)| n.as_str()).collect();
    // 3 separate projections fuse into one in_proj per weight/bias: 4 fewer per block.
    assert_eq!(oc.len(), ours.len() - 4 * 4);
    for want in [
        "visual.transformer.resblocks.1.attn.in_proj_weight",
        "transformer.resblocks.0.mlp.c_proj.bias",
        "visual.proj",
        "logit_bias",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let fused = &oc
        .iter()
        .find(|(n, _)| n == "transformer.resblocks.1.attn.in_proj_weight")
        .unwrap()
        .1;
    assert_eq!(fused.size(), [36, 12]);
    let proj = &oc.iter().find(|(n, _)| n == "visual.proj").unwrap().1;
    assert_eq!(proj.size(), [8, 4], "OpenCLIP's [width, embed]");
    let back: std::collections::HashMap<String, Tensor> = to_hf(oc).into_iter().collect();
    assert_eq!(back.len(), ours.len());
    for (n, t) in &ours {
        assert!(back[n].equal(t), "{n} changed");
    }
}

#[test]
fn text_pooling_is_read_from_both_formats_and_hf_cannot_state_last() {
    let dir = tempfile::tempdir().unwrap();
    let oc = |pool: Value| {
        let path = dir.path().join("oc.json");
        let text = match pool {
            Value::Null => json!({"vocab_size": 10}),
            p => json!({"vocab_size": 10, "pool_type": p}),
        };
        write_json(&path, &json!({"model_cfg": {"text_cfg": text}})).unwrap();
        read_config(&path, &dir.path().join("open_clip_model.safetensors"))
            .map(|(m, _)| m.text.pooling)
    };
    assert_eq!(
        oc(Value::Null).unwrap(),
        TextPooling::Argmax,
        "OpenCLIP's default"
    );
    assert_eq!(oc(json!("eos")).unwrap(), TextPooling::Eot);
    assert_eq!(oc(json!("last")).unwrap(), TextPooling::Last);
    let err = oc(json!("avg")).unwrap_err().to_string();
    assert!(err.contains("text_cfg.pool_type = \"avg\""), "{err}");

    let hf = |eos: Value| {
        let path = dir.path().join("config.json");
        write_json(
            &path,
            &json!({"text_config": {"vocab_size": 10, "eos_token_id": eos}}),
        )
        .unwrap();
        let m = crate::interop::hf::read_config(&path).unwrap();
        (m.text.pooling, m.eot_id)
    };
    assert_eq!(hf(json!(2)), (TextPooling::Argmax, 9), "HF's legacy argmax");
    assert_eq!(hf(json!(7)), (TextPooling::Eot, 7));

    let mut spec = ModelConfig::default().spec(7, LossKind::InfoNce);
    spec.text.pooling = TextPooling::Argmax;
    let cfg = crate::interop::hf::config_json(&spec, None, 0).unwrap();
    assert_eq!(cfg["text_config"]["eos_token_id"], 2);
    assert!(cfg["text_config"]["bos_token_id"].is_null());
    spec.text.pooling = TextPooling::Last;
    let err = crate::interop::hf::config_json(&spec, None, 0).unwrap_err();
    assert!(err.to_string().contains("pooling = \"last\""), "{err}");
    spec.text.pooling = TextPooling::Eot;
    spec.eot_id = 2;
    let err = crate::interop::hf::config_json(&spec, None, 0).unwrap_err();
    assert!(err.to_string().contains("argmax"), "{err}");
}

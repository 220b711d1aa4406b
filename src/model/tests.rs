use super::*;
use tch::{Device, Kind, nn::VarStore};

const EOT: i64 = 30;

/// libtorch's RNG is global and tests run on parallel threads: each test that seeds holds this
/// for its whole body so another test's draws cannot interleave.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(super) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn small_cfg() -> ModelSpec {
    ModelSpec {
        kind: ModelKind::Clip,
        embed_dim: 24,
        activation: Activation::QuickGelu,
        layer_norm_eps: 1e-5,
        vision: VisionConfig {
            image_size: 16,
            patch_size: 4,
            width: 32,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
            patch_dropout: 0.0,
        },
        text: TextConfig {
            vocab_size: EOT as usize + 1,
            context_length: 12,
            width: 32,
            layers: 2,
            heads: 4,
            mlp_ratio: 4.0,
            ..TextConfig::default()
        },
        eot_id: EOT,
        head: LogitHead::Clip,
    }
}

pub(super) fn build(cfg: &ModelSpec, head: LogitHead) -> (VarStore, ClipModel) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let m = ClipModel::new(
        &vs.root(),
        &ModelSpec {
            head,
            ..cfg.clone()
        },
    )
    .unwrap();
    (vs, m)
}

/// Captions of length 12 with EOT at `pos[b]` and random tokens elsewhere.
pub(super) fn tokens_with_eot(pos: &[i64]) -> Tensor {
    let b = pos.len() as i64;
    let t = Tensor::randint_low(1, EOT, [b, 12], (Kind::Int64, Device::Cpu));
    for (i, &p) in pos.iter().enumerate() {
        let _ = t.get(i as i64).get(p).fill_(EOT);
    }
    t
}

pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn output_shapes_and_normalisation() {
    let _rng = rng_lock();
    let (_vs, m) = build(&small_cfg(), LogitHead::Clip);
    let images = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let tokens = tokens_with_eot(&[2, 5, 11, 7]);
    let out = tch::no_grad(|| m.forward(&images, &tokens));
    assert_eq!(out.image_embeds.size(), [3, 24]);
    assert_eq!(out.text_embeds.size(), [4, 24]);
    assert_eq!(out.logits_per_image.size(), [3, 4]);
    assert_eq!(out.logits_per_text.size(), [4, 3]);
    let norms = out.text_embeds.norm_scalaropt_dim(2, [-1], false);
    assert!(max_diff(&norms, &norms.ones_like()) < 1e-5);
    assert!(max_diff(&out.logits_per_image, &out.logits_per_text.tr()) < 1e-6);
    assert_eq!(m.encode_text(&tokens).size(), [4, 24]);
    assert!(m.logit_bias().is_none());
    assert!((m.logit_scale().double_value(&[]) - (1.0f64 / 0.07).ln()).abs() < 1e-6);
}

#[test]
fn siglip_has_logit_bias() {
    let _rng = rng_lock();
    let (vs, m) = build(&small_cfg(), LogitHead::Siglip);
    assert_eq!(m.logit_bias().unwrap().double_value(&[]), -10.0);
    assert!((m.logit_scale().double_value(&[]) - 10f64.ln()).abs() < 1e-6);
    assert!(vs.variables().contains_key("logit_bias"));
    let images = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| m.forward(&images, &tokens_with_eot(&[3, 9])));
    let want = out.image_embeds.matmul(&out.text_embeds.tr()) * 10.0 - 10.0;
    assert!(max_diff(&out.logits_per_image, &want) < 1e-5);
    let (vs, _) = build(&small_cfg(), LogitHead::Clip);
    assert!(!vs.variables().contains_key("logit_bias"));
}

#[test]
fn text_attention_is_causal() {
    let _rng = rng_lock();
    let (_vs, m) = build(&small_cfg(), LogitHead::Clip);
    let tokens = tokens_with_eot(&[4, 6]);
    let before = tch::no_grad(|| m.encode_text(&tokens));
    // Change every token after the EOT: the pooled output must not move.
    let changed = tokens.copy();
    let _ = changed.get(0).narrow(0, 5, 7).fill_(3);
    let _ = changed.get(1).narrow(0, 7, 5).fill_(EOT);
    let after = tch::no_grad(|| m.encode_text(&changed));
    assert!(
        max_diff(&before, &after) < 1e-6,
        "{}",
        max_diff(&before, &after)
    );
    // A token before the EOT does move it (the test would pass trivially otherwise).
    let _ = changed
        .get(0)
        .get(1)
        .fill_(7 + changed.get(0).get(1).int64_value(&[]) % 20);
    let moved = tch::no_grad(|| m.encode_text(&changed));
    assert!(max_diff(&before.get(0), &moved.get(0)) > 1e-4);
}

#[test]
fn pooling_takes_the_first_eot() {
    let _rng = rng_lock();
    let (_vs, m) = build(&small_cfg(), LogitHead::Clip);
    let tokens = tokens_with_eot(&[3]);
    let _ = tokens.get(0).get(9).fill_(EOT);
    // Pooling at 3 = the full sequence truncated after position 3, pooled at its last token.
    let full = tch::no_grad(|| m.encode_text(&tokens));
    let cut = tch::no_grad(|| m.encode_text(&tokens.narrow(1, 0, 4)));
    assert!(max_diff(&full, &cut) < 1e-5, "{}", max_diff(&full, &cut));
    let at_nine = tokens.copy();
    let _ = at_nine.get(0).get(3).fill_(5);
    let other = tch::no_grad(|| m.encode_text(&at_nine));
    assert!(max_diff(&full, &other) > 1e-4);
}

#[test]
fn pooled_positions_per_pooling() {
    // Rows `[SOT] a b EOT pad pad` with pad 0 and with a pad id above EOT, and a row without EOT.
    let rows = Tensor::from_slice(&[
        7i64, 3, 4, 9, 0, 0, //
        7, 3, 9, 11, 11, 11, //
        7, 3, 4, 5, 6, 1,
    ])
    .view([3, 6]);
    let at = |p: TextPooling| Vec::<i64>::try_from(pooled_positions(&rows, p, 9)).unwrap();
    assert_eq!(
        at(TextPooling::Eot),
        [3, 2, 0],
        "first EOT; none: position 0"
    );
    assert_eq!(at(TextPooling::Argmax), [3, 3, 0], "first largest id");
    assert_eq!(at(TextPooling::Last), [5, 5, 5]);
}

#[test]
fn last_pooling_reads_the_last_position() {
    let _rng = rng_lock();
    let mut cfg = small_cfg();
    cfg.text.pooling = TextPooling::Last;
    let (_vs, m) = build(&cfg, LogitHead::Clip);
    // Only the last token differs; an EOT-pooled model would not notice.
    let one = tokens_with_eot(&[3]);
    let two = one.copy();
    let _ = one.get(0).get(11).fill_(1);
    let _ = two.get(0).get(11).fill_(2);
    let (a, b) = tch::no_grad(|| (m.encode_text(&one), m.encode_text(&two)));
    assert!(max_diff(&a, &b) > 1e-4);
}

#[test]
fn weight_decay_groups_follow_openclip() {
    let _rng = rng_lock();
    let mut cfg = crate::config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/models/tiny.toml"),
        &[],
    )
    .unwrap()
    .model
    .spec(EOT, crate::config::LossKind::Siglip);
    cfg.text.vocab_size = EOT as usize + 1;
    let (vs, _) = build(&cfg, LogitHead::Siglip);
    let vars = vs.variables();
    let mut excluded = 0;
    for (name, t) in &vars {
        let expect = t.dim() < 2
            || name.ends_with("position_embedding.weight")
            || name.ends_with("class_embedding");
        assert_eq!(no_weight_decay(name), expect, "{name}");
        excluded += expect as usize;
    }
    // 4 layers x (4 attention biases + 2 MLP biases + 2 x 2 LayerNorm) per tower, pre/post/final
    // LayerNorms (6), class + 2 position embeddings, logit scale and bias.
    assert_eq!(excluded, 2 * 4 * 10 + 6 + 3 + 2);
    assert!(!no_weight_decay(
        "text_model.embeddings.token_embedding.weight"
    ));
    assert!(!no_weight_decay(
        "vision_model.embeddings.patch_embedding.weight"
    ));
}

#[test]
fn init_statistics() {
    let _rng = rng_lock();
    let mut cfg = small_cfg();
    cfg.text.vocab_size = 2000;
    cfg.text.width = 64;
    cfg.text.layers = 3;
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let _m = ClipModel::new(&vs.root(), &cfg).unwrap();
    let v = vs.variables();
    let std = |n: &str| v[n].std(true).double_value(&[]);
    let close = |n: &str, want: f64| {
        let got = std(n);
        assert!(
            (got / want - 1.0).abs() < 0.1,
            "{n}: std {got}, want {want}"
        );
    };
    let w = 64f64;
    close("text_model.embeddings.token_embedding.weight", 0.02);
    close("text_model.embeddings.position_embedding.weight", 0.01);
    let l0 = "text_model.encoder.layers.0";
    close(&format!("{l0}.self_attn.q_proj.weight"), w.powf(-0.5));
    close(
        &format!("{l0}.self_attn.out_proj.weight"),
        w.powf(-0.5) / 6f64.sqrt(),
    );
    close(&format!("{l0}.mlp.fc1.weight"), (2.0 * w).powf(-0.5));
    close(&format!("{l0}.mlp.fc2.weight"), w.powf(-0.5) / 6f64.sqrt());
    close("text_projection.weight", w.powf(-0.5));
    close("visual_projection.weight", 32f64.powf(-0.5));
    close(
        "vision_model.embeddings.position_embedding.weight",
        32f64.powf(-0.5),
    );
    // U(±1/√fan_in) has std 1/√(3·fan_in); fan_in = 3·4·4.
    close(
        "vision_model.embeddings.patch_embedding.weight",
        (3.0 * 48.0f64).powf(-0.5),
    );
    let ln = &v["vision_model.encoder.layers.1.layer_norm2.weight"];
    assert!(ln.eq(1.0).all().int64_value(&[]) == 1);
    assert_eq!(
        v["text_model.encoder.layers.0.mlp.fc1.bias"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    // Same seed, same weights.
    tch::manual_seed(0);
    let vs2 = VarStore::new(Device::Cpu);
    let _m2 = ClipModel::new(&vs2.root(), &cfg).unwrap();
    for (n, t) in &vs2.variables() {
        assert!(t.equal(&v[n]), "{n} differs under the same seed");
    }
}

#[test]
fn vit_b_32_parameter_count_matches_hf() {
    let _rng = rng_lock();
    let cfg = crate::config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/models/vit-b-32.toml"),
        &[],
    )
    .unwrap()
    .model
    .spec(49407, crate::config::LossKind::InfoNce);
    let vs = VarStore::new(Device::Cpu);
    let _m = tch::no_grad(|| ClipModel::new(&vs.root(), &cfg)).unwrap();
    let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    // transformers 5.24: sum(p.numel() for p in CLIPModel(CLIPConfig()).parameters()).
    assert_eq!(n, 151_277_313);
}

#[test]
fn rejects_bad_configs() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let mut cfg = small_cfg();
    cfg.text.heads = 5;
    assert!(matches!(
        ClipModel::new(&vs.root(), &cfg),
        Err(ModelError::Config(_))
    ));
    let past_vocab = ModelSpec {
        eot_id: EOT + 1,
        ..small_cfg()
    };
    assert!(ClipModel::new(&vs.root(), &past_vocab).is_err());
}

#[test]
fn strict_loader_reports_every_mismatch() {
    let _rng = rng_lock();
    let (vs, _m) = build(&small_cfg(), LogitHead::Clip);
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| n != "logit_scale")
        .collect();
    for (n, t) in named.iter_mut() {
        if n == "text_projection.weight" {
            *t = Tensor::zeros([5, 5], (Kind::Float, Device::Cpu));
        }
    }
    named.push((
        "extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    named.push((
        "text_model.embeddings.position_ids".into(),
        Tensor::arange(12, (Kind::Int64, Device::Cpu)),
    ));
    let path = std::path::Path::new("bad.safetensors");
    let (mut vs2, _m2) = build(&small_cfg(), LogitHead::Clip);
    let before = vs2.variables()["visual_projection.weight"].copy();
    let copy = |named: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
        named.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
    };
    let err = load_named(&mut vs2, copy(&named), LoadMode::Strict, path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("bad.safetensors does not fit the model"),
        "{msg}"
    );
    assert!(msg.contains("missing in file: logit_scale"), "{msg}");
    assert!(msg.contains("unexpected in file: extra.weight"), "{msg}");
    assert!(
        msg.contains("text_projection.weight: model expects [24, 32], file has [5, 5]"),
        "{msg}"
    );
    assert!(!msg.contains("position_ids"), "{msg}");
    assert!(
        vs2.variables()["visual_projection.weight"].equal(&before),
        "a strict failure writes nothing"
    );

    // Lenient: what fits is copied, the rest reported.
    let report = load_named(&mut vs2, named, LoadMode::Lenient, path).unwrap();
    assert_eq!(report.skipped.missing, ["logit_scale"]);
    assert_eq!(report.skipped.unexpected, ["extra.weight"]);
    assert_eq!(report.skipped.mismatched.len(), 1);
    assert_eq!(report.loaded, vs.variables().len() - 2);
    assert!(
        vs2.variables()["visual_projection.weight"]
            .equal(&vs.variables()["visual_projection.weight"])
    );

    // Saved and read back, a store reloads exactly into a differently seeded model.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("model.safetensors");
    vs.save(&good).unwrap();
    tch::manual_seed(1);
    let mut vs3 = VarStore::new(Device::Cpu);
    let _m3 = ClipModel::new(&vs3.root(), &small_cfg()).unwrap();
    let tensors = Tensor::read_safetensors(&good).unwrap();
    load_named(&mut vs3, tensors, LoadMode::Strict, &good).unwrap();
    let v = vs.variables();
    for (n, t) in &vs3.variables() {
        assert!(t.equal(&v[n]), "{n}");
    }
}

#[test]
fn a_siglip_model_takes_clip_weights_and_keeps_its_bias_init() {
    let _rng = rng_lock();
    let (clip, _) = build(&small_cfg(), LogitHead::Clip);
    let (mut siglip, m) = build(&small_cfg(), LogitHead::Siglip);
    let tensors: Vec<(String, Tensor)> = clip.variables().into_iter().collect();
    let report = load_named(&mut siglip, tensors, LoadMode::Strict, "clip".as_ref()).unwrap();
    assert!(report.skipped.is_empty());
    assert_eq!(report.loaded, clip.variables().len());
    assert_eq!(m.logit_bias().unwrap().double_value(&[]), -10.0);
}

/// Patch dropout acts in training forward passes only: evaluation sees every patch whatever the
/// setting, a training pass with 0 is the evaluation pass, and one with 0.5 sees fewer tokens
/// (so different features), reproducibly for one draw.
#[test]
fn patch_dropout_drops_in_training_only() {
    let _g = rng_lock();
    let dropping = ModelSpec {
        vision: VisionConfig {
            patch_dropout: 0.5,
            ..small_cfg().vision
        },
        ..small_cfg()
    };
    let (_vs0, plain) = build(&small_cfg(), LogitHead::Clip);
    let (_vs1, model) = build(&dropping, LogitHead::Clip);
    let images = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let draw = PatchDraw {
        seed: 1,
        step: 1,
        first_sample: 0,
    };
    tch::no_grad(|| {
        let eval = plain.encode_image(&images);
        assert!(model.encode_image(&images).equal(&eval), "evaluation drops");
        assert!(plain.encode_image_train(&images, draw).equal(&eval));
        let train = model.encode_image_train(&images, draw);
        let diff = (&train - &eval).abs().max().double_value(&[]);
        assert!(
            diff > 1e-3,
            "a training pass with 0.5 equals evaluation ({diff})"
        );
        assert!(model.encode_image_train(&images, draw).equal(&train));
    });
}

/// Every parameter's gradient after one backward through both towers, by name; `autocast`
/// runs the forward under CPU bf16 autocast (the backward after leaving it, as training does).
fn gradients(checkpointed: bool, autocast: bool, frozen_text: bool) -> Vec<(String, Tensor)> {
    let (vs, mut m) = build(&small_cfg(), LogitHead::Clip);
    m.set_grad_checkpointing(checkpointed);
    if frozen_text {
        for (name, t) in vs.variables() {
            if name.starts_with("text_model") {
                let _ = t.set_requires_grad(false);
            }
        }
    }
    tch::manual_seed(5);
    let images = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let tokens = tokens_with_eot(&[3, 5, 11]);
    let prev = autocast.then(|| crate::shim::autocast_enter(false, false).unwrap());
    let (i, t) = (m.encode_image(&images), m.encode_text(&tokens));
    let logits = i.matmul(&t.tr()).to_kind(Kind::Float);
    if let Some(prev) = prev {
        crate::shim::autocast_exit(false, prev);
    }
    logits
        .cross_entropy_for_logits(&Tensor::arange(3, (Kind::Int64, Device::Cpu)))
        .backward();
    let mut g: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t.grad()))
        .collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    g
}

#[test]
fn grad_checkpointing_gives_the_same_gradients_in_fp32_bf16_and_with_a_frozen_tower() {
    let _g = rng_lock();
    for (autocast, frozen) in [(false, false), (true, false), (false, true)] {
        let plain = gradients(false, autocast, frozen);
        let recomputed = gradients(true, autocast, frozen);
        assert_eq!(plain.len(), recomputed.len());
        let layers = plain
            .iter()
            .filter(|(n, g)| n.contains(".layers.") && g.defined());
        assert!(layers.count() >= 32, "encoder layers without gradients");
        for ((name, a), (_, b)) in plain.iter().zip(&recomputed) {
            // (`logit_scale` takes no part in this loss.)
            assert_eq!(a.defined(), b.defined(), "{name}");
            if !a.defined() {
                continue;
            }
            let d = max_diff(a, b);
            assert!(
                d <= 1e-6,
                "autocast {autocast}, frozen {frozen}: {name} differs by {d}"
            );
        }
    }
    // Recomputing in fp32 what the forward ran in bf16 would differ far more than that.
    let (fp32, bf16) = (
        gradients(false, false, false),
        gradients(false, true, false),
    );
    let d = fp32
        .iter()
        .zip(&bf16)
        .filter(|((_, a), _)| a.defined())
        .map(|((_, a), (_, b))| max_diff(a, b))
        .fold(0.0, f64::max);
    assert!(d > 1e-4, "bf16 autocast changed the gradients by only {d}");
}

/// `small_cfg` as a SigLIP model: the joint space is the vision width.
fn siglip_cfg() -> ModelSpec {
    ModelSpec {
        kind: ModelKind::Siglip,
        embed_dim: 32,
        activation: Activation::GeluTanh,
        head: LogitHead::Siglip,
        ..small_cfg()
    }
}

#[test]
fn siglip_has_hf_siglip_names_and_shapes() {
    let _rng = rng_lock();
    let (vs, m) = build(&siglip_cfg(), LogitHead::Siglip);
    let vars = vs.variables();
    for (name, shape) in [
        ("vision_model.embeddings.patch_embedding.bias", vec![32]),
        (
            "vision_model.embeddings.position_embedding.weight",
            vec![16, 32],
        ),
        ("vision_model.head.probe", vec![1, 1, 32]),
        ("vision_model.head.attention.in_proj_weight", vec![96, 32]),
        ("vision_model.head.attention.in_proj_bias", vec![96]),
        ("vision_model.head.attention.out_proj.weight", vec![32, 32]),
        ("vision_model.head.layernorm.weight", vec![32]),
        ("vision_model.head.mlp.fc1.weight", vec![128, 32]),
        ("text_model.head.weight", vec![32, 32]),
        ("text_model.head.bias", vec![32]),
        ("logit_scale", vec![1]),
        ("logit_bias", vec![1]),
    ] {
        assert_eq!(vars.get(name).map(Tensor::size), Some(shape), "{name}");
    }
    for absent in [
        "vision_model.embeddings.class_embedding",
        "vision_model.pre_layrnorm.weight",
        "visual_projection.weight",
        "text_projection.weight",
    ] {
        assert!(!vars.contains_key(absent), "{absent}");
    }
    assert!(no_weight_decay("vision_model.head.probe"));
    assert!(no_weight_decay("vision_model.head.attention.in_proj_bias"));
    let images = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let tokens = tokens_with_eot(&[3, 9, 11]);
    let out = tch::no_grad(|| m.forward(&images, &tokens));
    assert_eq!(out.logits_per_image.size(), [2, 3]);
    let want = out.image_embeds.matmul(&out.text_embeds.tr()) * 10.0 - 10.0;
    assert!(max_diff(&out.logits_per_image, &want) < 1e-5);
}

/// SigLIP's text tower attends both ways and pools the last position: a token after the EOT
/// changes the output (CLIP, causal and pooled at the EOT, never sees it).
#[test]
fn siglip_text_is_bidirectional_and_pooled_last() {
    let _rng = rng_lock();
    let (_vs, m) = build(&siglip_cfg(), LogitHead::Siglip);
    let tokens = tokens_with_eot(&[3]);
    let _ = tokens.get(0).get(6).fill_(6);
    let after_eot = tokens.copy();
    let _ = after_eot.get(0).get(6).fill_(5);
    tch::no_grad(|| {
        let (a, b) = (m.encode_text(&tokens), m.encode_text(&after_eot));
        assert!(max_diff(&a, &b) > 1e-4, "a token after the EOT is seen");
    });
}

#[test]
fn siglip_specs_are_refused_with_the_key_to_change() {
    let wide = ModelSpec {
        embed_dim: 24,
        ..siglip_cfg()
    };
    let err = ClipModel::new(&VarStore::new(Device::Cpu).root(), &wide).unwrap_err();
    assert!(
        err.to_string()
            .contains("model.embed_dim = 24 must equal model.vision.width = 32")
    );
    let infonce = ModelSpec {
        head: LogitHead::Clip,
        ..siglip_cfg()
    };
    let err = ClipModel::new(&VarStore::new(Device::Cpu).root(), &infonce).unwrap_err();
    assert!(err.to_string().contains("loss.kind = \"siglip\""), "{err}");
}

/// Patch dropout without a class token: training passes see fewer patches, evaluation all.
#[test]
fn siglip_patch_dropout_drops_in_training_only() {
    let _g = rng_lock();
    let mut cfg = siglip_cfg();
    cfg.vision.patch_dropout = 0.5;
    let (_vs, m) = build(&cfg, LogitHead::Siglip);
    let images = Tensor::randn([3, 3, 16, 16], (Kind::Float, Device::Cpu));
    let draw = PatchDraw {
        seed: 1,
        step: 1,
        first_sample: 0,
    };
    tch::no_grad(|| {
        let eval = m.encode_image(&images);
        let train = m.encode_image_train(&images, draw);
        assert_eq!(train.size(), [3, 32]);
        assert!(max_diff(&train, &eval) > 1e-4);
        assert!(m.encode_image_train(&images, draw).equal(&train));
    });
}

/// The memory estimate counts exactly the variables a SigLIP model creates.
#[test]
fn siglip_parameter_count_matches_its_variables() {
    let _g = rng_lock();
    let (vs, _) = build(&siglip_cfg(), LogitHead::Siglip);
    let numel: i64 = vs
        .variables()
        .values()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum();
    assert_eq!(siglip_cfg().param_count(), numel as f64);
}

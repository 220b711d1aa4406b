//! Config loading through the library API: defaults, `--set` overrides, `extends`, and the exact
//! text of every validation and key error.
use cliptrain::config::{self, Config, ConfigError, DeviceSpec, Precision, Schedule};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(text: &str, overrides: &[&str]) -> Config {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::load_str(text, &o).unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
}

/// The problems reported for an invalid config, one string each.
fn problems(text: &str, overrides: &[&str]) -> Vec<String> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match config::load_str(text, &o) {
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => panic!("expected validation problems, got another error: {e}"),
        Ok(_) => panic!("expected validation problems, config was accepted"),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

// ---------- defaults ----------

#[test]
fn empty_config_is_all_defaults() {
    let c = ok("", &[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.run.device, DeviceSpec::Auto);
    assert_eq!(c.run.precision, Precision::Fp32);
    assert_eq!(c.optim.lr, 5e-4);
    assert_eq!(
        (c.optim.beta1, c.optim.beta2, c.optim.eps),
        (0.9, 0.98, 1e-6)
    );
    assert_eq!(c.optim.schedule, Schedule::Cosine);
    assert_eq!(c.data.crop_scale, [0.9, 1.0]);
    assert_eq!(c.data.image_keys, "jpg;jpeg;png;webp");
    // ViT-B/32 as in the CLIP paper.
    let (v, t) = (&c.model.vision, &c.model.text);
    assert_eq!(
        (v.image_size, v.patch_size, v.width, v.layers, v.heads),
        (224, 32, 768, 12, 12)
    );
    assert_eq!(
        (t.vocab_size, t.context_length, t.width, t.layers, t.heads),
        (49408, 77, 512, 12, 8)
    );
    assert_eq!(c.model.embed_dim, 512);
}

#[test]
fn reference_toml_documents_exactly_the_defaults() {
    let c = config::load(&repo().join("configs/reference.toml"), &[]).unwrap();
    assert_eq!(
        c,
        Config::default(),
        "configs/reference.toml drifted from Config::default()"
    );
}

#[test]
fn partial_section_keeps_other_defaults() {
    let c = ok("[optim]\nlr = 1e-3\n[model.text]\nlayers = 6\n", &[]);
    assert_eq!(c.optim.lr, 1e-3);
    assert_eq!(c.optim.batch_size, 256);
    assert_eq!(c.model.text.layers, 6);
    assert_eq!(c.model.text.width, 512);
}

#[test]
fn effective_config_round_trips_through_toml() {
    let c = config::load(&repo().join("configs/demo.toml"), &[]).unwrap();
    assert_eq!(ok(&c.to_toml(), &[]), c);
}

#[test]
fn every_shipped_config_is_valid() {
    let mut files = vec![];
    for dir in ["configs", "configs/models"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 6,
        "expected the presets and demo, found {files:?}"
    );
    for f in files {
        config::load(&f, &[]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn presets_have_the_clip_paper_dimensions() {
    let load = |n: &str| {
        config::load(&repo().join(format!("configs/models/{n}.toml")), &[])
            .unwrap()
            .model
    };
    let b16 = load("vit-b-16");
    assert_eq!(
        (b16.vision.patch_size, b16.vision.width, b16.text.width),
        (16, 768, 512)
    );
    let l14 = load("vit-l-14");
    assert_eq!(
        (
            l14.vision.patch_size,
            l14.vision.width,
            l14.vision.layers,
            l14.vision.heads
        ),
        (14, 1024, 24, 16)
    );
    assert_eq!(
        (l14.text.width, l14.text.heads, l14.embed_dim),
        (768, 12, 768)
    );
}

// ---------- overrides ----------

#[test]
fn overrides_are_typed() {
    let c = ok(
        "[run]\nseed = 1\n",
        &[
            "run.seed=7",
            "optim.lr=1e-3",
            "run.name=my-run",
            "run.device=cuda:1",
            "run.precision=bf16",
            "data.crop_scale=[0.5, 1.0]",
            "log.tensorboard=false",
            "model.vision.width=384",
            "model.vision.heads=6",
        ],
    );
    assert_eq!(c.run.seed, 7);
    assert_eq!(c.optim.lr, 1e-3);
    assert_eq!(c.run.name, "my-run");
    assert_eq!(c.run.device, DeviceSpec::Cuda(1));
    assert_eq!(c.run.precision, Precision::Bf16);
    assert_eq!(c.data.crop_scale, [0.5, 1.0]);
    assert!(!c.log.tensorboard);
    assert_eq!((c.model.vision.width, c.model.vision.heads), (384, 6));
}

#[test]
fn numeric_looking_override_of_a_string_field_stays_a_string() {
    let c = ok("", &["run.name=2024", "run.output_dir=\"/tmp/x\""]);
    assert_eq!(c.run.name, "2024");
    assert_eq!(c.run.output_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn later_override_wins() {
    assert_eq!(
        ok("", &["optim.steps=500", "optim.steps=900"]).optim.steps,
        900
    );
}

#[test]
fn override_errors_name_the_argument() {
    let p = problems("", &["optim.lr=fast"]);
    assert_eq!(
        p,
        vec![
            "optim.lr = \"fast\" in --set optim.lr=fast: invalid type: string \"fast\", expected a number"
        ]
    );
    let p = problems("", &["run.devcie=cpu"]);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(
            "unknown key `run.devcie` in --set run.devcie=cpu (did you mean `device`?"
        ),
        "{p:?}"
    );

    for (arg, want) in [
        ("optim.lr", "expected section.key=value"),
        ("lr=1", "dotted path"),
        ("run..seed=1", "dotted path"),
        ("run.seed.x=1", "`run.seed` is a value, not a section"),
    ] {
        let e = config::load_str("[run]\nseed = 1\n", &[arg.to_string()]).unwrap_err();
        assert!(matches!(e, ConfigError::BadOverride { .. }), "{arg}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("--set {arg}: ")) && msg.contains(want),
            "{arg}: {msg}"
        );
    }
}

// ---------- extends ----------

#[test]
fn extends_merges_parent_first_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "presets/base.toml",
        "[model.vision]\nwidth = 384\nheads = 6\n[optim]\nlr = 1e-3\nsteps = 50\n",
    );
    write(
        dir.path(),
        "presets/mid.toml",
        "extends = \"base.toml\"\n[optim]\nsteps = 70\n",
    );
    let child = write(
        dir.path(),
        "runs/child.toml",
        "extends = \"../presets/mid.toml\"\n[optim]\nlr = 2e-3\n[model.vision]\nlayers = 6\n",
    );
    let c = config::load(&child, &["optim.warmup_steps=5".into()]).unwrap();
    assert_eq!(c.optim.lr, 2e-3, "child value wins");
    assert_eq!(c.optim.steps, 70, "middle value wins over base");
    assert_eq!(c.optim.warmup_steps, 5, "override wins over all files");
    assert_eq!(
        (
            c.model.vision.width,
            c.model.vision.heads,
            c.model.vision.layers
        ),
        (384, 6, 6),
        "tables merge"
    );
}

#[test]
fn extends_cycle_and_missing_parent_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", "extends = \"b.toml\"\n");
    write(dir.path(), "b.toml", "extends = \"a.toml\"\n");
    let e = config::load(&a, &[]).unwrap_err().to_string();
    assert!(
        e.contains("`extends` cycle") && e.contains("a.toml -> ") && e.contains("b.toml"),
        "{e}"
    );

    let c = write(dir.path(), "c.toml", "extends = \"nowhere.toml\"\n");
    let e = config::load(&c, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot read config ") && e.contains("nowhere.toml"),
        "{e}"
    );

    let d = write(dir.path(), "d.toml", "extends = 3\n");
    let e = config::load(&d, &[]).unwrap_err().to_string();
    assert!(
        e.contains("d.toml: `extends` must be a file name string, found 3"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_a_parent_names_the_parent_file() {
    let dir = tempfile::tempdir().unwrap();
    let parent = write(dir.path(), "parent.toml", "[optim]\nlearning_rate = 1e-3\n");
    let child = write(
        dir.path(),
        "child.toml",
        "extends = \"parent.toml\"\n[optim]\nsteps = 3000\n",
    );
    let e = config::load(&child, &[]).unwrap_err();
    let ConfigError::Invalid(p) = e else {
        panic!("{e}")
    };
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(&format!(
            "unknown key `optim.learning_rate` in {}",
            parent.display()
        )),
        "{p:?}"
    );
}

// ---------- key and type errors ----------

#[test]
fn every_unknown_key_is_reported_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "x.toml",
        "[run]\ndevcie = \"cpu\"\n[modle]\nwidth = 1\n[model.vision]\nwidht = 3\n",
    );
    let ConfigError::Invalid(p) = config::load(&f, &[]).unwrap_err() else {
        panic!()
    };
    let shown = f.display().to_string();
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p.iter().any(|m| m.starts_with(&format!(
            "unknown key `run.devcie` in {shown} (did you mean `device`?"
        ))),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.starts_with(&format!(
            "unknown key `modle` in {shown} (did you mean `model`?"
        ))),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.starts_with(&format!(
            "unknown key `model.vision.widht` in {shown} (did you mean `width`?"
        ))),
        "{p:?}"
    );
    assert!(
        p.iter().all(|m| !m.contains('\n')),
        "one line per problem: {p:?}"
    );
}

#[test]
fn wrong_types_name_key_value_and_expectation() {
    let p = problems(
        "[run]\nseed = \"abc\"\ndevice = \"gpu\"\nprecision = \"fp8\"\n",
        &[],
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p.contains(&"run.seed = \"abc\" in the inline config: invalid type: string \"abc\", expected a non-negative integer".to_string()), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("run.device = \"gpu\" in the inline config: \"gpu\" is not a device; use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("run.precision = \"fp8\" in the inline config: unknown variant `fp8`, expected one of `fp32`, `bf16`, `fp16`")), "{p:?}");
}

#[test]
fn rule_errors_are_reported_beside_type_errors() {
    let p = problems("[run]\nseed = \"abc\"\n[optim]\nlr = -1\n", &[]);
    assert!(p[0].starts_with("run.seed = \"abc\""), "{p:?}");
    assert!(
        p.contains(&"optim.lr = -1 must be a finite number > 0".into()),
        "{p:?}"
    );
}

#[test]
fn syntax_error_shows_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "broken.toml",
        "[run]\nseed = 1\nname = \"unterminated\n",
    );
    let e = config::load(&f, &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("TOML syntax error in {}", f.display())),
        "{msg}"
    );
    assert!(msg.contains("line 3"), "{msg}");
}

// ---------- validation rules: the exact message for each ----------

fn assert_problem(text: &str, overrides: &[&str], want: &str) {
    let p = problems(text, overrides);
    assert!(p.iter().any(|m| m == want), "wanted {want:?}\ngot {p:#?}");
}

#[test]
fn model_rules() {
    assert_problem(
        "[model.vision]\nimage_size = 65\npatch_size = 8\n",
        &[],
        "model.vision.image_size = 65 must be divisible by model.vision.patch_size = 8",
    );
    assert_problem(
        "",
        &["model.vision.patch_size=0"],
        "model.vision.patch_size = 0 must be at least 1",
    );
    assert_problem(
        "",
        &["model.vision.width=100"],
        "model.vision.width = 100 must be divisible by model.vision.heads = 12",
    );
    assert_problem(
        "",
        &["model.text.width=500"],
        "model.text.width = 500 must be divisible by model.text.heads = 8",
    );
    assert_problem(
        "",
        &["model.text.heads=0"],
        "model.text.heads = 0 must be at least 1",
    );
    assert_problem(
        "",
        &["model.text.layers=0"],
        "model.text.layers = 0 must be at least 1",
    );
    assert_problem(
        "",
        &["model.text.context_length=1"],
        "model.text.context_length = 1 must be at least 2",
    );
    assert_problem(
        "",
        &["model.text.mlp_ratio=0"],
        "model.text.mlp_ratio = 0 must be a finite number > 0",
    );
    assert_problem(
        "",
        &["model.embed_dim=0"],
        "model.embed_dim = 0 must be at least 1",
    );
    for (set, shown) in [("1.0", "1"), ("-0.25", "-0.25")] {
        let want = format!(
            "model.vision.patch_dropout = {shown} must be in [0, 1) (the fraction of patch \
             tokens dropped in training; 0 = off)"
        );
        assert_problem("", &[&format!("model.vision.patch_dropout={set}")], &want);
    }
}

#[test]
fn optim_rules() {
    assert_problem(
        "",
        &["optim.batch_size=1"],
        "optim.batch_size = 1 must be at least 2 (a contrastive batch needs negatives)",
    );
    assert_problem(
        "",
        &["optim.micro_batch_size=100"],
        "optim.micro_batch_size = 100 must divide optim.batch_size = 256 (or be 0 for no micro-batching)",
    );
    assert_problem(
        "",
        &["optim.lr=-1"],
        "optim.lr = -1 must be a finite number > 0",
    );
    assert_problem(
        "",
        &["optim.min_lr=1"],
        "optim.min_lr = 1 must be between 0 and optim.lr = 0.0005",
    );
    assert_problem(
        "",
        &["optim.warmup_steps=2000"],
        "optim.warmup_steps = 2000 must be at most optim.steps = 1000",
    );
    assert_problem(
        "",
        &[
            "optim.schedule=constant-cooldown",
            "optim.cooldown_steps=950",
        ],
        "optim.cooldown_steps = 950 must fit in optim.steps = 1000 after optim.warmup_steps = 100",
    );
    assert_problem(
        "",
        &["optim.beta2=1.0"],
        "optim.beta2 = 1 must be in [0, 1)",
    );
    assert_problem(
        "",
        &["optim.eps=0"],
        "optim.eps = 0 must be a finite number > 0",
    );
    assert_problem(
        "",
        &["optim.weight_decay=-0.1"],
        "optim.weight_decay = -0.1 must be a finite number >= 0",
    );
    assert_problem(
        "",
        &["optim.grad_clip_norm=-1"],
        "optim.grad_clip_norm = -1 must be a finite number >= 0 (0 turns clipping off)",
    );
    assert_problem("", &["optim.steps=0"], "optim.steps = 0 must be at least 1");
    assert_problem(
        "",
        &["optim.max_bad_steps=0"],
        "optim.max_bad_steps = 0 must be at least 1",
    );
}

#[test]
fn run_data_and_other_rules() {
    assert_problem(
        "",
        &["run.name=a/b"],
        "run.name = \"a/b\" must be a plain folder name (not empty, no '/', not '.' or '..')",
    );
    assert_problem(
        "",
        &["run.loss_scale=0"],
        "run.loss_scale = 0 must be finite, at least 2^-24 (a smaller one leaves every fp16 gradient 0) and at most fp32's largest value (3.4028235e38)",
    );
    assert_problem(
        "",
        &["run.loss_scale_growth_interval=0"],
        "run.loss_scale_growth_interval = 0 must be at least 1",
    );
    assert_problem(
        "",
        &["data.image_keys=jpg;;png"],
        "data.image_keys = \"jpg;;png\" must list member extensions separated by ';' with none empty, e.g. \"jpg;png\"",
    );
    assert_problem(
        "",
        &["data.text_key=\" \""],
        "data.text_key = \" \" must not be empty",
    );
    assert_problem(
        "",
        &["data.prefetch=0"],
        "data.prefetch = 0 must be at least 1",
    );
    assert_problem(
        "",
        &["data.crop_scale=[0.9, 0.5]"],
        "data.crop_scale = [0.9, 0.5] must satisfy 0 < min <= max <= 1",
    );
    assert_problem(
        "",
        &["data.image_std=[1.0, 0.0, 1.0]"],
        "data.image_std[1] = 0 must be a finite number > 0",
    );
    assert_problem(
        "",
        &["data.max_image_pixels=100"],
        "data.max_image_pixels = 100 must be at least model.vision.image_size² = 50176",
    );
    assert_problem(
        "",
        &["loss.max_logit_scale=0.5"],
        "loss.max_logit_scale = 0.5 must be a finite number >= 1 (it bounds exp(logit_scale), CLIP uses 100)",
    );
    assert_problem(
        "",
        &["eval.zeroshot=data/eval"],
        "eval.classnames = \"\" must name a classnames file when eval.zeroshot is set",
    );
    assert_problem(
        "",
        &["eval.batch_size=0"],
        "eval.batch_size = 0 must be at least 1",
    );
    assert_problem("", &["log.every=0"], "log.every = 0 must be at least 1");
    assert_problem(
        "",
        &["checkpoint.every_minutes=-1"],
        "checkpoint.every_minutes = -1 must be between 0 (off) and 525600 (a year)",
    );
    // Whole minutes are written as TOML integers.
    let c = ok("[checkpoint]\nevery_minutes = 30\n", &[]);
    assert_eq!(c.checkpoint.every_minutes, 30.0);
}

#[test]
fn all_broken_rules_are_reported_together() {
    let p = problems(
        "[optim]\nbatch_size = 1\nlr = 0\n[model.vision]\nimage_size = 65\npatch_size = 8\n",
        &[],
    );
    assert_eq!(p.len(), 3, "{p:#?}");
}

#[test]
fn finetune_rules() {
    assert_problem(
        "",
        &["finetune.image_layer_decay=1.5"],
        "finetune.image_layer_decay = 1.5 must be in (0, 1] (1 = no layer-wise decay)",
    );
    assert_problem(
        "",
        &["data.caption_fields={a = 0.5, b = 0.4}"],
        "data.caption_fields = {\"a\": 0.5, \"b\": 0.4} must hold probabilities that sum to 1 (they sum to 0.9)",
    );
    assert_problem(
        "",
        &["finetune.text_layer_decay=0"],
        "finetune.text_layer_decay = 0 must be in (0, 1] (1 = no layer-wise decay)",
    );
    assert_problem(
        "",
        &["finetune.text_lr_scale=-1"],
        "finetune.text_lr_scale = -1 must be a finite number >= 0 (it multiplies optim.lr)",
    );
    assert_problem(
        "",
        &[
            "finetune.lock_image=true",
            "finetune.unlocked_image_layers=13",
        ],
        "finetune.unlocked_image_layers = 13 must be at most the tower's 12 layers",
    );
    assert_problem(
        "",
        &["finetune.lock_image=true", "finetune.lock_text=true"],
        "finetune.lock_text = true must not lock both whole towers at once (nothing but the temperature would train)",
    );
    // [finetune.lora]: present = on, each key checked on one line.
    let lora =
        |toml: &str, want: &str| assert_problem(&format!("[finetune.lora]\n{toml}"), &[], want);
    lora("rank = 0", "finetune.lora.rank = 0 must be at least 1");
    lora(
        "rank = 600",
        "finetune.lora.rank = 600 must be at most the text tower's width 512 (a larger rank is not low-rank)",
    );
    lora(
        "alpha = 0",
        "finetune.lora.alpha = 0 must be a finite number > 0 (updates are scaled by alpha / rank)",
    );
    lora(
        "dropout = 1.0",
        "finetune.lora.dropout = 1 must be in [0, 1)",
    );
    lora(
        "targets = [\"x_proj\"]",
        "finetune.lora.targets = [\"x_proj\"] in the inline config: unknown variant `x_proj`, expected one of `q_proj`, `k_proj`, `v_proj`, `out_proj`, `fc1`, `fc2`",
    );
    lora(
        "towers = []",
        "finetune.lora.towers = [] must name at least one of image, text",
    );
    lora(
        "last_layers = 13",
        "finetune.lora.last_layers = 13 must be at most the image tower's 12 layers (0 = every block)",
    );
    assert_problem(
        "[finetune.lora]\ndropout = 0.1\n[model]\ngrad_checkpointing = true\n",
        &[],
        "finetune.lora.dropout = 0.1 must be 0 with model.grad_checkpointing (it encodes each block twice, and the two passes would draw different dropout masks)",
    );
    // [data.augment] and class-labelled data.
    assert_problem(
        "",
        &["data.augment.hflip=1.5"],
        "data.augment.hflip = 1.5 must be a probability in [0, 1]",
    );
    assert_problem(
        "",
        &["data.augment.ratio=[1.5, 0.5]"],
        "data.augment.ratio = [1.5, 0.5] must satisfy 0 < min <= max (width / height)",
    );
    assert_problem(
        "",
        &["data.augment.color_jitter=[0.4, 0.4, 0.4, 0.7]"],
        "data.augment.color_jitter = [0.4, 0.4, 0.4, 0.7] must be [brightness, contrast, saturation, hue] with the first three >= 0 and hue in [0, 0.5]",
    );
    assert_problem(
        "",
        &["data.augment.erasing_scale=[0.2, 1.0]"],
        "data.augment.erasing_scale = [0.2, 1] must satisfy 0 < min <= max < 1 (fractions of the image)",
    );
    assert_problem(
        "",
        &["loss.mask_same_class=true"],
        "loss.mask_same_class = true must come with data.classnames: only class-labelled data says which samples share a class",
    );
    assert_problem(
        "",
        &["data.templates=\"t.txt\""],
        "data.templates = \"t.txt\" must come with data.classnames (templates make captions from class labels)",
    );
    let c = ok("[finetune.lora]\n", &[]);
    assert_eq!(c.finetune.lora.unwrap().scale(), 2.0);
    assert!(ok("", &[]).finetune.lora.is_none());
    let c = ok(
        "",
        &["finetune.logit_scale=reset", "model.init_from=\"runs/x\""],
    );
    assert_eq!(c.finetune.logit_scale, config::LogitScaleMode::Reset);
    assert_eq!(c.model.init_from, "runs/x");
}

#[test]
fn a_bad_mixture_of_sources_is_explained_one_line_each() {
    let mixture = r#"
[data]
train = "data/a-{000000..000003}.tar"
[[data.sources]]
name = "web"
train = "data/web-{000000..000009}.tar"
weight = 3
[[data.sources]]
name = "web"
train = ""
weight = 0
"#;
    let p = problems(mixture, &[]);
    for want in [
        "data.train = \"data/a-{000000..000003}.tar\" must be empty when data.sources is set",
        "data.mode = \"epoch\" must be \"resampled\" when data.sources is set",
        "data.sources[1].train = \"\" must name the source's shards",
        "data.sources[1].weight = 0 must be a finite number > 0",
        "data.sources[1].name = \"web\" must differ from the other sources' names",
    ] {
        assert!(p.iter().any(|l| l.starts_with(want)), "{want}\nin {p:#?}");
    }
    assert!(p.iter().all(|l| !l.contains('\n')), "{p:#?}");
    assert_eq!(p.len(), 5, "{p:#?}");
    // A valid mixture: weights default to 1.
    let c = ok(
        r#"
[data]
mode = "resampled"
[[data.sources]]
train = "a.tar"
[[data.sources]]
train = "b.tar"
weight = 0.5
"#,
        &[],
    );
    assert_eq!(c.data.sources[0].weight, 1.0);
    assert_eq!(c.data.sources[1].weight, 0.5);
}

#[test]
fn siglip_combinations_are_explained_one_line_each() {
    let siglip = "[model]\nkind = \"siglip\"\nembed_dim = 768\n[loss]\nkind = \"siglip\"\n";
    assert_eq!(ok(siglip, &[]).model.kind, config::ModelKind::Siglip);
    assert_eq!(
        problems(siglip, &["loss.kind=infonce", "model.embed_dim=512"]),
        [
            "model.embed_dim = 512 must equal model.vision.width = 768 with model.kind = \
             \"siglip\" (its attention-pooling head outputs the vision width)",
            "model.kind = \"siglip\" must be trained with loss.kind = \"siglip\" (the SigLIP \
             model's logit_bias is only trained by the sigmoid loss); set loss.kind = \"siglip\"",
        ]
    );
    let preset = config::load(&repo().join("configs/models/siglip-b-16.toml"), &[]).unwrap();
    assert_eq!(
        (preset.model.kind, preset.loss.kind, preset.model.embed_dim),
        (config::ModelKind::Siglip, config::LossKind::Siglip, 768)
    );
}

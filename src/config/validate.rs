//! The rules a config must satisfy beyond its types. Each broken rule becomes one message of
//! the form `key = value must <rule>`, so the user sees every problem at once.
use super::{Config, DataMode, LossKind, ModelKind, Schedule};
use std::fmt::Display;

/// Every broken rule in `c`, one message each; empty when the config is valid.
pub fn validate(c: &Config) -> Vec<String> {
    let mut p = Problems::default();
    run(c, &mut p);
    data(c, &mut p);
    model(c, &mut p);
    optim(c, &mut p);
    finetune(c, &mut p);
    rest(c, &mut p);
    p.0
}

/// `checkpoint.every_minutes` above a year is surely a typo (and must fit a `Duration`).
const MAX_CHECKPOINT_MINUTES: f64 = 525_600.0;

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, key: &str, value: impl Display, rule: impl Display) {
        if !ok {
            self.0.push(format!("{key} = {value} must {rule}"));
        }
    }

    fn positive(&mut self, key: &str, value: f64) {
        self.check(
            value.is_finite() && value > 0.0,
            key,
            value,
            "be a finite number > 0",
        );
    }

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        self.check(value >= min, key, value, format!("be at least {min}"));
    }
}

/// TOML rendering of a string value, for messages.
/// The largest `data.image_resize_size`: its square is the most a resize computes per image.
const MAX_RESIZE: u32 = 4096;

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn run(c: &Config, p: &mut Problems) {
    let name = &c.run.name;
    p.check(
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']),
        "run.name",
        q(name),
        "be a plain folder name (not empty, no '/', not '.' or '..')",
    );
    let scale = c.run.loss_scale;
    if let Some(why) = crate::precision::loss_scale_problem(scale) {
        p.check(false, "run.loss_scale", scale, why);
    }
    p.at_least(
        "run.loss_scale_growth_interval",
        c.run.loss_scale_growth_interval,
        1,
    );
}

fn data(c: &Config, p: &mut Problems) {
    let d = &c.data;
    let keys: Vec<&str> = d.image_keys.split(';').map(str::trim).collect();
    p.check(
        keys.iter().all(|k| !k.is_empty()),
        "data.image_keys",
        q(&d.image_keys),
        "list member extensions separated by ';' with none empty, e.g. \"jpg;png\"",
    );
    p.check(
        !d.text_key.trim().is_empty(),
        "data.text_key",
        q(&d.text_key),
        "not be empty",
    );
    p.at_least("data.prefetch", d.prefetch as u64, 1);
    if !d.caption_fields.is_empty() {
        for (field, w) in &d.caption_fields {
            p.check(
                w.is_finite() && *w > 0.0,
                &format!("data.caption_fields.{field}"),
                w,
                "be a probability > 0",
            );
        }
        let sum: f64 = d.caption_fields.values().sum();
        p.check(
            (sum - 1.0).abs() < 1e-6,
            "data.caption_fields",
            format!("{:?}", d.caption_fields),
            format!("hold probabilities that sum to 1 (they sum to {sum})"),
        );
        p.check(
            d.json_caption_field.is_empty(),
            "data.json_caption_field",
            q(&d.json_caption_field),
            "be empty when data.caption_fields names the JSON fields",
        );
    }
    let [lo, hi] = d.crop_scale;
    p.check(
        lo > 0.0 && lo <= hi && hi <= 1.0,
        "data.crop_scale",
        format!("[{lo}, {hi}]"),
        "satisfy 0 < min <= max <= 1",
    );
    augment(&d.augment, p);
    p.check(
        d.templates.is_empty() || !d.classnames.is_empty(),
        "data.templates",
        q(&d.templates),
        "come with data.classnames (templates make captions from class labels)",
    );
    p.check(
        d.classnames.is_empty() || d.caption_fields.is_empty(),
        "data.caption_fields",
        "{…}",
        "be empty with data.classnames (captions are made from the labels)",
    );
    p.check(
        !c.loss.mask_same_class || !d.classnames.is_empty(),
        "loss.mask_same_class",
        true,
        "come with data.classnames: only class-labelled data says which samples share a class",
    );
    for (i, s) in d.image_std.iter().enumerate() {
        p.positive(&format!("data.image_std[{i}]"), *s);
    }
    for (i, m) in d.image_mean.iter().enumerate() {
        p.check(
            m.is_finite(),
            &format!("data.image_mean[{i}]"),
            m,
            "be finite",
        );
    }
    p.check(
        d.image_resize_size <= MAX_RESIZE,
        "data.image_resize_size",
        d.image_resize_size,
        format!("be at most {MAX_RESIZE} (0 = model.vision.image_size)"),
    );
    sources(c, p);
    let side = c.model.vision.image_size as u64;
    p.check(
        d.max_image_pixels >= side * side,
        "data.max_image_pixels",
        d.max_image_pixels,
        format!("be at least model.vision.image_size² = {}", side * side),
    );
}

/// `[[data.sources]]`: a mixture replaces `data.train`, draws with replacement, and needs
/// positive weights.
/// `[data.augment]`: probabilities in [0, 1], ranges ordered and positive, jitter as
/// torchvision accepts it.
fn augment(a: &crate::config::AugmentConfig, p: &mut Problems) {
    for (key, v) in [
        ("data.augment.hflip", a.hflip),
        ("data.augment.color_jitter_prob", a.color_jitter_prob),
        ("data.augment.grayscale_prob", a.grayscale_prob),
        ("data.augment.erasing_prob", a.erasing_prob),
    ] {
        p.check(
            (0.0..=1.0).contains(&v),
            key,
            v,
            "be a probability in [0, 1]",
        );
    }
    let shown = |r: [f64; 2]| format!("[{}, {}]", r[0], r[1]);
    for (key, r) in [
        ("data.augment.ratio", a.ratio),
        ("data.augment.erasing_ratio", a.erasing_ratio),
    ] {
        p.check(
            r[0] > 0.0 && r[0] <= r[1] && r[1].is_finite(),
            key,
            shown(r),
            "satisfy 0 < min <= max (width / height)",
        );
    }
    let [lo, hi] = a.erasing_scale;
    p.check(
        lo > 0.0 && lo <= hi && hi < 1.0,
        "data.augment.erasing_scale",
        shown(a.erasing_scale),
        "satisfy 0 < min <= max < 1 (fractions of the image)",
    );
    let [b, c, s, h] = a.color_jitter;
    p.check(
        [b, c, s].iter().all(|v| v.is_finite() && *v >= 0.0) && (0.0..=0.5).contains(&h),
        "data.augment.color_jitter",
        format!("[{b}, {c}, {s}, {h}]"),
        "be [brightness, contrast, saturation, hue] with the first three >= 0 and hue in [0, 0.5]",
    );
}

fn sources(c: &Config, p: &mut Problems) {
    let d = &c.data;
    if d.sources.is_empty() {
        return;
    }
    p.check(
        d.train.is_empty(),
        "data.train",
        q(&d.train),
        "be empty when data.sources is set (use one form: a single data.train or a [[data.sources]] mixture)",
    );
    p.check(
        d.mode == DataMode::Resampled,
        "data.mode",
        q("epoch"),
        "be \"resampled\" when data.sources is set (a mixture draws every source with replacement)",
    );
    for (i, s) in d.sources.iter().enumerate() {
        p.check(
            !s.train.trim().is_empty(),
            &format!("data.sources[{i}].train"),
            q(&s.train),
            "name the source's shards, e.g. \"data/laion-{000000..000099}.tar\"",
        );
        p.check(
            s.weight.is_finite() && s.weight > 0.0,
            &format!("data.sources[{i}].weight"),
            s.weight,
            "be a finite number > 0 (a source's relative share of the samples)",
        );
        let twice = d.sources[..i]
            .iter()
            .any(|o| !s.name.is_empty() && o.name == s.name);
        p.check(
            !twice,
            &format!("data.sources[{i}].name"),
            q(&s.name),
            "differ from the other sources' names",
        );
    }
}

/// The `[model]` rules are the model's own ([`crate::model::ModelSpec::dim_problems`]), so a
/// model read from a Hugging Face, OpenCLIP or checkpoint folder is held to the same ones.
fn model(c: &Config, p: &mut Problems) {
    let spec = c.model.spec(0, c.loss.kind);
    p.0.extend(spec.dim_problems());
    // SigLIP's architecture includes a logit_bias, and InfoNCE would leave it untrained.
    p.check(
        c.model.kind == ModelKind::Clip || c.loss.kind == LossKind::Siglip,
        "model.kind",
        q(c.model.kind.name()),
        "be trained with loss.kind = \"siglip\" (the SigLIP model's logit_bias is only \
         trained by the sigmoid loss); set loss.kind = \"siglip\"",
    );
    // A Hub id is checked for its form here; whether the model exists is known only when it
    // is fetched (or looked up in the cache).
    if let Err(e) = crate::hub::HubId::parse(&c.model.init_from) {
        p.check(
            false,
            "model.init_from",
            q(&c.model.init_from),
            format!("be a Hub id hf:ORG/NAME or hf:ORG/NAME@REVISION ({e})"),
        );
    }
}

fn optim(c: &Config, p: &mut Problems) {
    let o = &c.optim;
    p.at_least("optim.steps", o.steps, 1);
    p.check(
        o.batch_size >= 2,
        "optim.batch_size",
        o.batch_size,
        "be at least 2 (a contrastive batch needs negatives)",
    );
    if o.micro_batch_size > 0 {
        p.check(
            o.micro_batch_size <= o.batch_size && o.batch_size % o.micro_batch_size == 0,
            "optim.micro_batch_size",
            o.micro_batch_size,
            format!(
                "divide optim.batch_size = {} (or be 0 for no micro-batching)",
                o.batch_size
            ),
        );
    }
    p.positive("optim.lr", o.lr);
    p.check(
        o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr,
        "optim.min_lr",
        o.min_lr,
        format!("be between 0 and optim.lr = {}", o.lr),
    );
    p.check(
        o.warmup_steps <= o.steps,
        "optim.warmup_steps",
        o.warmup_steps,
        format!("be at most optim.steps = {}", o.steps),
    );
    if o.schedule == Schedule::ConstantCooldown {
        p.check(
            o.warmup_steps + o.cooldown_steps <= o.steps,
            "optim.cooldown_steps",
            o.cooldown_steps,
            format!(
                "fit in optim.steps = {} after optim.warmup_steps = {}",
                o.steps, o.warmup_steps
            ),
        );
    }
    for (key, b) in [("optim.beta1", o.beta1), ("optim.beta2", o.beta2)] {
        p.check((0.0..1.0).contains(&b), key, b, "be in [0, 1)");
    }
    p.positive("optim.eps", o.eps);
    p.check(
        o.weight_decay.is_finite() && o.weight_decay >= 0.0,
        "optim.weight_decay",
        o.weight_decay,
        "be a finite number >= 0",
    );
    p.check(
        o.grad_clip_norm.is_finite() && o.grad_clip_norm >= 0.0,
        "optim.grad_clip_norm",
        o.grad_clip_norm,
        "be a finite number >= 0 (0 turns clipping off)",
    );
    p.at_least("optim.max_bad_steps", o.max_bad_steps as u64, 1);
    p.check(
        o.ema_decay == 0.0 || (o.ema_decay > 0.0 && o.ema_decay < 1.0),
        "optim.ema_decay",
        o.ema_decay,
        "be 0 (no EMA) or in (0, 1), e.g. 0.999",
    );
}

fn finetune(c: &Config, p: &mut Problems) {
    let f = &c.finetune;
    for (key, v) in [
        ("finetune.image_lr_scale", f.image_lr_scale),
        ("finetune.text_lr_scale", f.text_lr_scale),
    ] {
        p.check(
            v.is_finite() && v >= 0.0,
            key,
            v,
            "be a finite number >= 0 (it multiplies optim.lr)",
        );
    }
    for (key, v) in [
        ("finetune.image_layer_decay", f.image_layer_decay),
        ("finetune.text_layer_decay", f.text_layer_decay),
    ] {
        p.check(
            v > 0.0 && v <= 1.0,
            key,
            v,
            "be in (0, 1] (1 = no layer-wise decay)",
        );
    }
    for (key, n, layers) in [
        (
            "finetune.unlocked_image_layers",
            f.unlocked_image_layers,
            c.model.vision.layers,
        ),
        (
            "finetune.unlocked_text_layers",
            f.unlocked_text_layers,
            c.model.text.layers,
        ),
    ] {
        p.check(
            n <= layers || !c.model.init_from.is_empty(),
            key,
            n,
            format!("be at most the tower's {layers} layers"),
        );
    }
    p.check(
        !(f.lock_image
            && f.lock_text
            && f.unlocked_image_layers == 0
            && f.unlocked_text_layers == 0),
        "finetune.lock_text",
        true,
        "not lock both whole towers at once (nothing but the temperature would train)",
    );
    if let Some(l) = &f.lora {
        lora(c, l, p);
    }
}

/// `[finetune.lora]`. Sizes are checked against the config's towers when it states them; with
/// `model.init_from` the source's are checked again when the model is built.
fn lora(c: &Config, l: &crate::model::LoraConfig, p: &mut Problems) {
    p.at_least("finetune.lora.rank", l.rank as u64, 1);
    // With model.init_from the source's towers are checked when the model is built.
    if c.model.init_from.is_empty() {
        for (key, value, rule) in l.size_problems(&c.model.vision, &c.model.text) {
            p.check(false, key, value, rule);
        }
    }
    p.check(
        l.alpha.is_finite() && l.alpha > 0.0,
        "finetune.lora.alpha",
        l.alpha,
        "be a finite number > 0 (updates are scaled by alpha / rank)",
    );
    p.check(
        (0.0..1.0).contains(&l.dropout),
        "finetune.lora.dropout",
        l.dropout,
        "be in [0, 1)",
    );
    p.check(
        !l.targets.is_empty(),
        "finetune.lora.targets",
        "[]",
        "name at least one of q_proj, k_proj, v_proj, out_proj, fc1, fc2",
    );
    p.check(
        !l.towers.is_empty(),
        "finetune.lora.towers",
        "[]",
        "name at least one of image, text",
    );
    // Both encode a block twice and expect the same function: a second dropout draw would
    // differentiate another network than the one that produced the loss.
    for (on, key) in [
        (c.optim.micro_batch_size > 0, "optim.micro_batch_size"),
        (c.model.grad_checkpointing, "model.grad_checkpointing"),
    ] {
        p.check(
            l.dropout == 0.0 || !on,
            "finetune.lora.dropout",
            l.dropout,
            format!(
                "be 0 with {key} (it encodes each block twice, and the two passes would draw \
                 different dropout masks)"
            ),
        );
    }
}

fn rest(c: &Config, p: &mut Problems) {
    p.check(
        c.loss.max_logit_scale.is_finite() && c.loss.max_logit_scale >= 1.0,
        "loss.max_logit_scale",
        c.loss.max_logit_scale,
        "be a finite number >= 1 (it bounds exp(logit_scale), CLIP uses 100)",
    );
    let e = &c.eval;
    p.at_least("eval.batch_size", e.batch_size as u64, 1);
    // A CLIP_benchmark folder brings its own classnames.txt (the one file looked at here).
    p.check(
        e.zeroshot.is_empty()
            || !e.classnames.is_empty()
            || std::path::Path::new(&e.zeroshot)
                .join("classnames.txt")
                .is_file(),
        "eval.classnames",
        q(&e.classnames),
        "name a classnames file when eval.zeroshot is set",
    );
    let minutes = c.checkpoint.every_minutes;
    p.check(
        minutes.is_finite() && (0.0..=MAX_CHECKPOINT_MINUTES).contains(&minutes),
        "checkpoint.every_minutes",
        minutes,
        format!("be between 0 (off) and {MAX_CHECKPOINT_MINUTES} (a year)"),
    );
    p.at_least("log.every", c.log.every, 1);
    p.at_least("dist.timeout_s", c.dist.timeout_s, 1);
    p.at_least("dist.bucket_mb", c.dist.bucket_mb as u64, 1);
}

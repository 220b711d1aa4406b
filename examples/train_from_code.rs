//! Trains a small CLIP from Rust code: the config built in code instead of read from TOML, its
//! preflight printed, then the run.
//!
//! ```text
//! cliptrain data synth --out data/synth
//! cliptrain tokenizer train --data 'data/synth/train-{000000..000007}.tar' --vocab-size 1000 \
//!     --out data/synth/tokenizer.json
//! cargo run --release --example train_from_code -- \
//!     'data/synth/train-{000000..000007}.tar' data/synth/tokenizer.json runs 50
//! ```
//! It writes `runs/from-code/step-NNNNNNN/`, a checkpoint that `cliptrain eval`, `export` and
//! `examples/zeroshot_from_code.rs` open like any other.
use cliptrain::{Config, DeviceSpec, Resume, RunPlan, TrainOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: train_from_code SHARDS TOKENIZER OUT_DIR [STEPS]";
    let mut args = std::env::args().skip(1);
    let shards = args.next().ok_or(usage)?;
    let tokenizer = args.next().ok_or(usage)?;
    let out_dir = args.next().ok_or(usage)?;
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);

    // Every field has a default (OpenAI's ViT-B/32 recipe); write only what differs.
    let mut cfg = Config::default();
    cfg.run.name = "from-code".into();
    cfg.run.output_dir = out_dir.into();
    cfg.run.device = DeviceSpec::Cpu;
    cfg.data.train = shards;
    cfg.data.tokenizer = tokenizer;
    cfg.data.shuffle_buffer = 256;
    // A CPU-sized model: 32 px images of 16 patches, two layers of width 64 in each tower.
    cfg.model.embed_dim = 64;
    let vision = &mut cfg.model.vision;
    (vision.image_size, vision.patch_size) = (32, 8);
    (vision.width, vision.layers, vision.heads) = (64, 2, 2);
    let text = &mut cfg.model.text;
    (text.vocab_size, text.context_length) = (1024, 24);
    (text.width, text.layers, text.heads) = (64, 2, 2);
    cfg.optim.batch_size = 32;
    cfg.optim.steps = steps;
    cfg.optim.warmup_steps = 2;
    cfg.optim.lr = 1e-3;
    cfg.log.every = 1;
    cfg.log.tensorboard = false;

    // What `cliptrain config check` prints: the run as it will be, or every reason it cannot
    // start, before anything is allocated.
    let plan = RunPlan::new(&cfg, &Resume::No)?;
    for line in plan.describe() {
        println!("plan: {line}");
    }

    let summary = cliptrain::train(&cfg, &TrainOptions::default())?;
    let (first, last) = (summary.losses.first(), summary.losses.last());
    println!(
        "trained steps {}..{}: loss {:.4} -> {:.4}",
        summary.first_step,
        summary.last_step,
        first.map_or(f64::NAN, |l| l.1),
        last.map_or(f64::NAN, |l| l.1)
    );
    if let Some(dir) = &summary.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
    Ok(())
}

//! Zero-shot classification and text-image similarity from Rust code, with any model folder:
//! a cliptrain checkpoint or run folder, a Hugging Face CLIP/SigLIP folder or an OpenCLIP one.
//!
//! ```text
//! cargo run --release --example zeroshot_from_code -- runs/from-code \
//!     data/synth/eval-000000.tar data/synth/classnames.txt data/synth/templates.txt
//! ```
use cliptrain::{LoadedModel, ZeroShotTask};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: zeroshot_from_code MODEL EVAL_SHARDS CLASSNAMES TEMPLATES";
    let mut args = std::env::args().skip(1);
    let model_dir = args.next().ok_or(usage)?;
    let (data, classnames, templates) = (
        args.next().ok_or(usage)?,
        args.next().ok_or(usage)?,
        args.next().ok_or(usage)?,
    );

    let device = tch::Device::cuda_if_available();
    let model = LoadedModel::open(Path::new(&model_dir), device)?;
    // bf16 autocast on CUDA, fp32 on the CPU (`None`: the default), 64 texts per batch.
    let encoder = model.encoder(None, 64)?;

    // Texts embed to L2-normalised rows: their dot products are cosine similarities.
    let texts = [
        "a photo of a red circle.".to_string(),
        "a photo of a blue square.".into(),
    ];
    let emb = encoder.texts(&texts)?;
    let cos = emb.get(0).dot(&emb.get(1)).double_value(&[]);
    println!(
        "{} text embeddings of dim {}; cosine of the two: {cos:.3}",
        texts.len(),
        emb.size()[1]
    );

    // Zero-shot: one classifier row per class from the prompt templates, then top-1/top-5.
    let task = ZeroShotTask::resolve(&data, "test", Some(&classnames), Some(&templates), None)?;
    let report = task.run(&encoder, &model.eval_images(64, 2))?;
    println!(
        "zero-shot on {}: top-1 {:.3}, top-5 {:.3} over {} classes",
        report.data, report.metrics.top1, report.metrics.top5, report.metrics.classes
    );
    Ok(())
}

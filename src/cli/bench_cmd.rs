//! `cliptrain bench ...`: throughput of one part of the system, measured the way the
//! matching Python reference is measured (scripts/bench_*.sh put them side by side).
use anyhow::Context;
use clap::{Args, Subcommand};
use cliptrain::config::{DataConfig, DataMode, OptimConfig};
use cliptrain::data::buffers::HostMemory;
use cliptrain::data::inspect::inspect;
use cliptrain::data::loader::{Loader, LoaderOptions};
use cliptrain::data::mixture::{Component, SampleStream, TrainShards};
use cliptrain::data::sample::SampleKeys;
use cliptrain::data::spec::parse_spec;
use cliptrain::data::stream::{Order, StreamOptions};
use cliptrain::data::transform::ImageTransform;
use cliptrain::model::{ClipModel, no_weight_decay};
use cliptrain::optim::AdamW;
use cliptrain::text::TextTokenizer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of the training data path: read + decode + random resized crop + tokenize +
    /// batch (u8 pixels; normalisation happens in the training step), on the background loader
    /// exactly as a CPU run uses it.
    Data(DataBenchArgs),
    /// ms per AdamW step over a model preset's parameters (random gradients), fused kernel vs
    /// per-tensor, on the CPU.
    Optim(OptimBenchArgs),
}

#[derive(Debug, Args)]
pub struct DataBenchArgs {
    /// Shard spec.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    pub spec: Option<String>,
    /// Read the run config's training data instead: `data.train` or its `[[data.sources]]`
    /// mixture, with its mode, shuffle buffer, seed, member keys and crop scale.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The tokenizer.json captions are encoded with (default with --config: its
    /// `data.tokenizer`).
    #[arg(long, required_unless_present = "config")]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    #[arg(long, default_value_t = 77)]
    pub context_length: usize,
    /// Decode threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Batches timed, after one warm-up batch.
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    /// Print one JSON line (`images_per_s`, ...) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct OptimBenchArgs {
    /// A config whose `[model]` gives the parameters (e.g. configs/models/vit-b-32.toml).
    #[arg(long)]
    pub model: PathBuf,
    /// Steps timed per kernel, after two warm-up steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// libtorch intra-op threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the parameters' names, shapes and weight-decay flags as JSON here, so the
    /// torch side (scripts/bench_optim.py) times the very same tensors.
    #[arg(long)]
    pub shapes_out: Option<PathBuf>,
    /// Print one JSON line (`fused_ms`, `per_tensor_ms`, ...) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Data(args) => data(args),
        BenchCommand::Optim(args) => optim(args),
    }
}

fn data(args: DataBenchArgs) -> anyhow::Result<()> {
    let threads = cliptrain::runtime::cpu_threads(args.threads, "--threads");
    tch::set_num_threads(1); // the loader's work is ours, not libtorch's; keep the cores for decoding
    let (d, seed) = match &args.config {
        Some(path) => {
            let cfg = cliptrain::config::load(path, &[])?;
            (cfg.data, cfg.run.seed)
        }
        None => (
            DataConfig {
                train: args.spec.clone().unwrap_or_default(),
                ..DataConfig::default()
            },
            0,
        ),
    };
    let tok_path = match (&args.tokenizer, &args.config) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) if !d.tokenizer.is_empty() => PathBuf::from(&d.tokenizer),
        (None, cfg) => anyhow::bail!(
            "{}: data.tokenizer is empty; pass --tokenizer",
            cfg.as_ref()
                .map_or("the config".into(), |p| p.display().to_string())
        ),
    };
    let opts = d.tokenizer_options(args.context_length);
    let tokenizer = Arc::new(TextTokenizer::load(&tok_path, &opts)?);
    let parts = super::data_cmd::data_parts(&d)?;
    let sources = if d.sources.is_empty() {
        TrainShards::Single(parse_spec(&d.train)?)
    } else {
        let mut mixture = vec![];
        for (name, weight, spec) in &parts {
            mixture.push(Component {
                name: name.clone(),
                shards: parse_spec(spec)?,
                weight: *weight,
            });
        }
        TrainShards::Mixture(mixture)
    };
    let stream_opts = StreamOptions {
        order: match d.mode {
            DataMode::Epoch => Order::Epoch,
            DataMode::Resampled => Order::Resampled,
        },
        shuffle_buffer: d.shuffle_buffer,
        seed,
        rank: 0,
        world_size: 1,
    };
    let stream = SampleStream::open(&sources, stream_opts, None)?;
    let opts = LoaderOptions {
        batch_size: args.batch_size,
        transform: ImageTransform {
            size: args.image_size,
            augment: d.train_augment(),
            max_pixels: d.max_image_pixels,
            seed: 0,
        },
        keys: SampleKeys::from_config(&d),
        workers: threads,
        prefetch: 2,
        memory: HostMemory::Pageable,
    };
    let mut loader = Loader::start(stream, tokenizer, opts)?;
    let warm = Instant::now();
    loader
        .next_batch()?
        .ok_or_else(|| anyhow::anyhow!("no batch"))?;
    let warmup_s = warm.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut images = 0usize;
    for _ in 0..args.batches {
        let b = loader
            .next_batch()?
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))?;
        images += b.images.size()[0] as usize;
    }
    let secs = start.elapsed().as_secs_f64();
    let ips = images as f64 / secs;
    drop(loader);
    // The floor this path can reach: read + decode alone, every sample of the shards, same threads.
    let shards: Vec<_> = match &sources {
        TrainShards::Single(s) => s.clone(),
        TrainShards::Mixture(m) => m.iter().flat_map(|s| s.shards.clone()).collect(),
    };
    let floor = Instant::now();
    let report = inspect(
        &shards,
        &SampleKeys::from_config(&d),
        d.max_image_pixels,
        threads,
    );
    let decode_ips = report.samples_ok as f64 / floor.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"images_per_s": ips, "images": images, "seconds": secs, "warmup_s": warmup_s,
                "decode_only_images_per_s": decode_ips,
                "threads": threads, "image_size": args.image_size, "batch_size": args.batch_size})
        );
    } else {
        println!(
            "{ips:.0} images/s ({images} images in {secs:.2} s after a {warmup_s:.2} s warm-up batch; {threads} threads, {} px)",
            args.image_size
        );
    }
    Ok(())
}

fn optim(args: OptimBenchArgs) -> anyhow::Result<()> {
    let threads = cliptrain::runtime::cpu_threads(args.threads, "--threads");
    tch::set_num_threads(threads as i32);
    let cfg = cliptrain::config::load(&args.model, &[])?;
    let spec = cfg
        .model
        .spec(cfg.model.text.vocab_size as i64 - 1, cfg.loss.kind);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = ClipModel::new(&vs.root(), &spec)?;
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    // Random gradients, set through autograd (tch cannot assign `.grad`): d/dp sum(p·r) = r.
    tch::manual_seed(0);
    params
        .iter()
        .map(|(_, p)| (p * p.randn_like().detach()).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
        .backward();
    let numel: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
    if let Some(path) = &args.shapes_out {
        let shapes: Vec<_> = params
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "shape": p.size(), "decay": !no_weight_decay(n)}))
            .collect();
        std::fs::write(path, serde_json::to_string(&shapes)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Each kernel gets its own optimizer (moments) over the same parameters and gradients.
    // Wall time and this process's CPU time per step: on a shared machine the CPU time is the
    // steadier of the two.
    let ms = |fused: bool| {
        let optim = OptimConfig {
            fused,
            ..OptimConfig::default()
        };
        let named = params
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect();
        let mut opt = AdamW::new(named, &optim, no_weight_decay);
        for _ in 0..2 {
            opt.step(1e-4, None);
        }
        let (start, cpu) = (Instant::now(), cpu_seconds());
        for _ in 0..args.steps {
            opt.step(1e-4, None);
        }
        let per_step = 1e3 / args.steps as f64;
        (
            start.elapsed().as_secs_f64() * per_step,
            (cpu_seconds() - cpu) * per_step,
        )
    };
    let ((fused_ms, fused_cpu_ms), (per_tensor_ms, per_tensor_cpu_ms)) = (ms(true), ms(false));
    if args.json {
        println!(
            "{}",
            serde_json::json!({"fused_ms": fused_ms, "per_tensor_ms": per_tensor_ms,
                "fused_cpu_ms": fused_cpu_ms, "per_tensor_cpu_ms": per_tensor_cpu_ms,
                "tensors": params.len(), "numel": numel, "steps": args.steps, "threads": threads})
        );
    } else {
        println!(
            "fused {fused_ms:.1} ms/step ({fused_cpu_ms:.1} CPU), per-tensor {per_tensor_ms:.1} ms/step ({per_tensor_cpu_ms:.1} CPU): {:.2}x; {} tensors, {:.1} M parameters, {threads} threads",
            per_tensor_ms / fused_ms,
            params.len(),
            numel as f64 / 1e6
        );
    }
    Ok(())
}

/// User + system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

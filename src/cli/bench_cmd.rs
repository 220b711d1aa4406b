//! `cliptrain bench ...`: throughput of one part of the system, measured the way the
//! matching Python reference is measured (scripts/bench_*.sh put them side by side).
use clap::{Args, Subcommand};
use cliptrain::config::DataConfig;
use cliptrain::data::buffers::HostMemory;
use cliptrain::data::inspect::inspect;
use cliptrain::data::loader::{Loader, LoaderOptions};
use cliptrain::data::sample::SampleKeys;
use cliptrain::data::spec::parse_spec;
use cliptrain::data::stream::{Order, ShardStream, StreamOptions};
use cliptrain::data::transform::{Augment, ImageTransform};
use cliptrain::text::TextTokenizer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of the training data path: read + decode + random resized crop + tokenize +
    /// batch (u8 pixels; normalisation happens in the training step), on the background loader
    /// exactly as a CPU run uses it.
    Data(DataBenchArgs),
}

#[derive(Debug, Args)]
pub struct DataBenchArgs {
    /// Shard spec.
    pub spec: String,
    /// The tokenizer.json captions are encoded with.
    #[arg(long)]
    pub tokenizer: PathBuf,
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

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Data(args) => data(args),
    }
}

fn data(args: DataBenchArgs) -> anyhow::Result<()> {
    let threads = cliptrain::runtime::cpu_threads(args.threads, "--threads");
    tch::set_num_threads(1); // the loader's work is ours, not libtorch's; keep the cores for decoding
    let d = DataConfig::default();
    let tokenizer = Arc::new(TextTokenizer::from_file(
        &args.tokenizer,
        args.context_length,
    )?);
    let stream_opts = StreamOptions {
        order: Order::Epoch,
        shuffle_buffer: d.shuffle_buffer,
        seed: 0,
        rank: 0,
        world_size: 1,
    };
    let stream = ShardStream::new(parse_spec(&args.spec)?, stream_opts)?;
    let opts = LoaderOptions {
        batch_size: args.batch_size,
        transform: ImageTransform {
            size: args.image_size,
            augment: Augment::Train {
                scale: d.crop_scale,
            },
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
    let shards = parse_spec(&args.spec)?;
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

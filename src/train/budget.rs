//! What a run will hold, checked against the host before anything is allocated: the device
//! must exist, thread counts stay within reach of the cores, and the loader's batches, the
//! shuffle buffer and (on the CPU) the model with its optimizer state must fit in memory. A
//! typo such as `optim.batch_size = 1000000000000` is then a one-line refusal naming the keys,
//! not an abort in the allocator.
use super::TrainError;
use crate::config::Config;
use crate::runtime;
use tch::Device;

/// The share of `MemAvailable` a run may plan to fill; the rest is left for what the estimate
/// does not count (activations, decoding, libtorch's own caches).
pub(super) const MEMORY_SHARE: f64 = 0.8;

/// The least one buffered raw sample takes (a tiny JPEG and its caption), for the estimate
/// before any sample is read; the stream then bounds the buffer by its samples' real bytes.
pub(super) const MIN_SAMPLE_BYTES: f64 = 4096.0;

/// `run.device`, resolved, when this host has it.
pub(super) fn check_device(cfg: &Config) -> Result<Device, TrainError> {
    runtime::device(cfg.run.device).map_err(|e| TrainError::Setup(format!("run.device = {e}")))
}

/// Caps `cfg`'s thread counts (with a warning naming the key) and checks its memory estimate
/// against this host.
pub(super) fn fit_to_host(cfg: &mut Config, device: Device) -> Result<(), TrainError> {
    if cfg.run.threads > 0 {
        cfg.run.threads = runtime::cpu_threads(cfg.run.threads, "run.threads");
    }
    if cfg.data.workers > 0 {
        cfg.data.workers = runtime::cpu_threads(cfg.data.workers, "data.workers");
    }
    if let Some(available) = runtime::memory_available() {
        check_memory(cfg, device, available as f64)?;
    }
    Ok(())
}

/// The bytes the shuffle buffer may take once running: what the estimate left of the budget
/// for it (at least the floor the estimate assumed).
pub(super) fn shuffle_buffer_bytes(cfg: &Config, device: Device) -> u64 {
    let Some(available) = runtime::memory_available() else {
        return u64::MAX;
    };
    let floor = buffered_samples(cfg) * MIN_SAMPLE_BYTES;
    let others: f64 = estimate(cfg, device).iter().map(|(_, b)| b).sum::<f64>() - floor;
    (MEMORY_SHARE * available as f64 - others).max(floor) as u64
}

/// Samples the shuffle buffers hold: one buffer per `[[data.sources]]` entry of a mixture.
fn buffered_samples(cfg: &Config) -> f64 {
    (cfg.data.shuffle_buffer * cfg.data.sources.len().max(1)) as f64
}

/// What the run holds, by the keys that set it: (keys, bytes). The loader keeps up to
/// `data.prefetch` ready batches plus four in the making and reuse; the estimate is for the
/// whole node (its ranks together load at most the global batch).
pub(super) fn estimate(cfg: &Config, device: Device) -> Vec<(&'static str, f64)> {
    let side = cfg.model.vision.image_size as f64;
    // u8 pixels and int64 tokens (batches are normalised on the device, not in host memory).
    let sample = 3.0 * side * side + cfg.model.text.context_length as f64 * 8.0;
    let batch = cfg.optim.batch_size as f64 * sample;
    let model = match device {
        // Parameters, gradients and AdamW's two moments, in f32.
        Device::Cpu => cfg.model.spec(0, cfg.loss.kind).param_count() * 16.0,
        _ => 0.0,
    };
    vec![
        (
            "data.shuffle_buffer",
            buffered_samples(cfg) * MIN_SAMPLE_BYTES,
        ),
        (
            "optim.batch_size x (data.prefetch + 4)",
            batch * (cfg.data.prefetch as f64 + 4.0),
        ),
        ("the model with its gradients and AdamW state", model),
    ]
}

fn check_memory(cfg: &Config, device: Device, available: f64) -> Result<(), TrainError> {
    let parts = estimate(cfg, device);
    let total: f64 = parts.iter().map(|(_, b)| b).sum();
    let budget = MEMORY_SHARE * available;
    if total <= budget {
        return Ok(());
    }
    let gb = |b: f64| format!("{:.1} GB", b / 1e9);
    let shown: Vec<String> = parts
        .iter()
        .filter(|(_, b)| *b > 0.01 * total)
        .map(|(what, b)| format!("{what}: {}", gb(*b)))
        .collect();
    Err(TrainError::Setup(format!(
        "this run would hold about {} in memory ({}), more than {:.0}% of the {} this host has \
         available; lower those keys",
        gb(total),
        shown.join(", "),
        100.0 * MEMORY_SHARE,
        gb(available)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_cannot_fit_are_refused_by_key() {
        let fits = Config::default();
        assert!(check_memory(&fits, Device::Cpu, 64e9).is_ok());
        for (key, set) in [
            ("optim.batch_size", "optim.batch_size=1000000000000"),
            ("data.prefetch", "data.prefetch=1000000000000"),
            ("data.shuffle_buffer", "data.shuffle_buffer=1000000000000"),
            ("model", "model.vision.layers=1000000000"),
        ] {
            let cfg = crate::config::load_str("[run]\ndevice = \"cpu\"\n", &[set.into()]).unwrap();
            let e = check_memory(&cfg, Device::Cpu, 64e9)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(key) && e.contains("of the 64.0 GB"),
                "{set}: {e}"
            );
        }
    }
}

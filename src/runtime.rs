//! What this process runs on: the libtorch it loaded, CUDA, threads. Reported by `cliptrain env`
//! and at the start of long jobs, so a run's log says which build produced it.
use crate::shim;
use serde::Serialize;
use std::fmt;

/// A snapshot of the libtorch runtime in this process.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    pub cliptrain_version: &'static str,
    pub build_profile: &'static str,
    /// Version of the libtorch headers compiled in.
    pub libtorch_version: String,
    /// The torch `lib` folder baked in as rpath at build time.
    pub libtorch_lib_built: &'static str,
    /// Where `libtorch_cpu.so` was actually loaded from (LD_LIBRARY_PATH can redirect it).
    pub libtorch_lib_loaded: Option<String>,
    /// CUDA runtime version the loaded CUDA backend was built with, e.g. "13.0".
    pub cuda_build: Option<String>,
    /// cuDNN version the loaded CUDA backend was built with, e.g. "9.19.0".
    pub cudnn_build: Option<String>,
    /// Why the CUDA backend is missing, when it is.
    pub cuda_backend_error: Option<String>,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    pub intra_op_threads: i32,
    pub cpu_capability: String,
}

impl RuntimeInfo {
    /// Queries libtorch; cheap, and safe without a GPU.
    pub fn gather() -> Self {
        let cuda = shim::cuda_build();
        let (cuda_build, cudnn_build, cuda_backend_error) = match cuda {
            Ok(b) => (
                Some(cuda_version(b.runtime)),
                Some(cudnn_version(b.cudnn)),
                None,
            ),
            Err(e) => (
                None,
                None,
                Some(e.lines().next().unwrap_or_default().to_string()),
            ),
        };
        Self {
            cliptrain_version: env!("CARGO_PKG_VERSION"),
            build_profile: env!("CLIPTRAIN_PROFILE"),
            libtorch_version: shim::torch_version(),
            libtorch_lib_built: env!("CLIPTRAIN_LIBTORCH_LIB"),
            libtorch_lib_loaded: loaded_library_dir("libtorch_cpu.so"),
            cuda_build,
            cudnn_build,
            cuda_backend_error,
            cuda_available: tch::Cuda::is_available(),
            cuda_device_count: tch::Cuda::device_count(),
            cudnn_available: tch::Cuda::cudnn_is_available(),
            intra_op_threads: tch::get_num_threads(),
            cpu_capability: shim::cpu_capability(),
        }
    }
}

impl fmt::Display for RuntimeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "cliptrain       {} ({} build)",
            self.cliptrain_version, self.build_profile
        )?;
        writeln!(f, "libtorch        {}", self.libtorch_version)?;
        writeln!(f, "libtorch lib    {} (rpath)", self.libtorch_lib_built)?;
        if let Some(loaded) = &self.libtorch_lib_loaded
            && loaded != self.libtorch_lib_built
        {
            writeln!(f, "  loaded from   {loaded}")?;
        }
        match &self.cuda_backend_error {
            None => writeln!(
                f,
                "CUDA backend    linked (CUDA {}, cuDNN {})",
                or_none(&self.cuda_build),
                or_none(&self.cudnn_build)
            )?,
            Some(e) => writeln!(f, "CUDA backend    NOT linked: {e}")?,
        }
        writeln!(
            f,
            "CUDA available  {} ({} device{})",
            yes_no(self.cuda_available),
            self.cuda_device_count,
            if self.cuda_device_count == 1 { "" } else { "s" }
        )?;
        writeln!(f, "cuDNN available {}", yes_no(self.cudnn_available))?;
        writeln!(f, "CPU threads     {} (intra-op)", self.intra_op_threads)?;
        write!(f, "CPU kernels     {}", self.cpu_capability)
    }
}

/// `requested` threads, or every core when 0 (the config's convention for "all").
pub fn cpu_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// 13000 -> "13.0" (CUDART_VERSION is major*1000 + minor*10).
fn cuda_version(v: i64) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// 91900 -> "9.19.0" (cuDNN 9 encodes major*10000 + minor*100 + patch).
fn cudnn_version(v: i64) -> String {
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}

/// The folder of a shared library mapped into this process, from /proc/self/maps.
fn loaded_library_dir(name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with(name))?;
    let path = std::path::Path::new(path);
    Some(path.parent()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_decode() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12080), "12.8");
        assert_eq!(cudnn_version(91900), "9.19.0");
        assert_eq!(cudnn_version(90100), "9.1.0");
    }
}

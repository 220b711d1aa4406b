//! What this process runs on: the libtorch it loaded, CUDA, threads. Reported by `cliptrain env`
//! and at the start of long jobs, so a run's log says which build produced it.
use crate::config::DeviceSpec;
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

/// A device this host does not have (libtorch would panic on its first tensor there).
#[derive(Debug, thiserror::Error)]
#[error("{device} is not on this host: {}", describe_cuda(*.count))]
pub struct DeviceUnavailable {
    pub device: DeviceSpec,
    /// CUDA devices this process sees.
    pub count: i64,
}

fn describe_cuda(count: i64) -> String {
    match count {
        0 => "it has no CUDA device (no NVIDIA driver or GPU); use \"cpu\" or \"auto\"".into(),
        1 => "it has 1 CUDA device, cuda:0".into(),
        n => format!("it has {n} CUDA devices, cuda:0 to cuda:{}", n - 1),
    }
}

/// The libtorch device `spec` names, checked against the devices this host has: a CUDA device
/// that is not there is an error naming it and what exists, at start-up instead of a panic at
/// the first tensor.
pub fn device(spec: DeviceSpec) -> Result<tch::Device, DeviceUnavailable> {
    if let DeviceSpec::Cuda(i) = spec {
        let count = tch::Cuda::device_count();
        if i64::try_from(i).map_or(true, |i| i >= count) {
            return Err(DeviceUnavailable {
                device: spec,
                count,
            });
        }
    }
    Ok(spec.resolve())
}

/// libtorch's own build report (`torch.__config__.show()`) and its thread settings
/// (`torch.__config__.parallel_info()`), for `cliptrain env --build-config`.
pub fn build_report() -> (String, String) {
    (shim::build_config(), shim::parallel_info())
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads one pool gets: twice the cores (decode and I/O may overlap a little; more
/// only adds switching, and a typo like 100000 would start that many threads).
pub fn max_threads() -> usize {
    2 * cores()
}

/// `requested` threads, or every core when 0 (the config's convention for "all"); at most
/// [`max_threads`], with a warning naming `key` when it asked for more.
pub fn cpu_threads(requested: usize, key: &str) -> usize {
    let cap = max_threads();
    match requested {
        0 => cores(),
        n if n > cap => {
            tracing::warn!(
                "{key} = {n} is more than this host's {} cores can use; using {cap} (twice the cores)",
                cores()
            );
            cap
        }
        n => n,
    }
}

/// Bytes of memory the kernel says can be given to a new program without swapping
/// (`MemAvailable` in /proc/meminfo); `None` where that is not known.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
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

/// Bytes an unprivileged process may still write on the file system of `path`.
pub fn disk_free(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a buffer of the right type; read only on success.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cuda_device_is_an_error_naming_it() {
        let count = tch::Cuda::device_count();
        let e = device(DeviceSpec::Cuda(count as usize + 6)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cuda:{} is not on this host", count + 6))
        );
        assert_eq!(device(DeviceSpec::Cpu).unwrap(), tch::Device::Cpu);
    }

    #[test]
    fn thread_counts_are_capped_relative_to_the_cores() {
        assert_eq!(cpu_threads(0, "run.threads"), cores());
        assert_eq!(cpu_threads(1, "run.threads"), 1);
        assert_eq!(cpu_threads(100_000, "data.workers"), 2 * cores());
    }

    #[test]
    fn mem_available_reads_meminfo() {
        let text = "MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(8_192_000_000));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert!(memory_available().is_some_and(|b| b > 0));
    }

    #[test]
    fn version_numbers_decode() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12080), "12.8");
        assert_eq!(cudnn_version(91900), "9.19.0");
        assert_eq!(cudnn_version(90100), "9.1.0");
    }
}

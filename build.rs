//! Links the binary against the same libtorch as torch-sys and compiles our C++ shim.
//!
//! Three things tch's own build script does not do for a downstream binary:
//! - an rpath to the torch `lib` folder, so `cliptrain` runs without `LD_LIBRARY_PATH`;
//! - `--no-as-needed -ltorch`, because rustc links with `--as-needed` by default, which drops
//!   `libtorch_cuda.so` (no symbol is referenced directly) and CUDA then silently disappears;
//! - the `csrc/` shim for the libtorch C++ API that tch does not expose, including c10d
//!   (`csrc/dist.cpp`; with `CLIPTRAIN_NCCL=1` also the NCCL process group) and ATen's fused
//!   optimizer kernels (`csrc/optim.cpp`) and activation checkpointing (`csrc/recompute.cpp`).
use std::path::{Path, PathBuf};

fn main() {
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report DEP_TCH_LIBTORCH_LIB; is torch-sys a direct dependency?",
    ));
    let torch_root = lib
        .parent()
        .expect("torch lib folder has a parent")
        .to_path_buf();
    let include = torch_root.join("include");

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // PyPI torch >= 2.7 (and every libtorch 2.11 download) uses the C++11 ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // ProcessGroupGloo.hpp declares nothing without it.
        .define("USE_C10D_GLOO", None)
        // The wheel lacks the <gloo/*.h> headers ProcessGroupGloo.hpp includes; declarations
        // suffice for calling its exported API (csrc/gloo_decls/README.md).
        .include(std::env::var("GLOO_INCLUDE").unwrap_or_else(|_| "csrc/gloo_decls".into()))
        .flag("-w")
        .file("csrc/shim.cpp")
        .file("csrc/optim.cpp")
        .file("csrc/recompute.cpp")
        .file("csrc/dist.cpp");
    if std::env::var("CLIPTRAIN_NCCL").is_ok_and(|v| v == "1") {
        add_nccl(&mut build, &torch_root);
    }
    build.compile("cliptrain_shim");

    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-env=CLIPTRAIN_LIBTORCH_LIB={}", lib.display());
    println!(
        "cargo:rustc-env=CLIPTRAIN_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=CLIPTRAIN_NCCL");
    println!("cargo:rerun-if-env-changed=CUDA_EXTRA_INCLUDE");
}

/// The NCCL process group: ProcessGroupNCCL.hpp needs the CUDA runtime headers and nccl.h from
/// the nvidia-* wheels torch depends on, plus `crt/host_config.h` and `<nv/target>`, which no
/// torch dependency installs (`CUDA_EXTRA_INCLUDE`: the include folder of the unzipped
/// nvidia-cuda-crt and nvidia-cuda-cccl wheels matching torch's CUDA).
fn add_nccl(build: &mut cc::Build, torch_root: &Path) {
    let site = torch_root.parent().expect("torch sits in site-packages");
    let cuda = site.join("nvidia/cu13/include");
    let nccl = site.join("nvidia/nccl/include");
    for dir in [&cuda, &nccl] {
        assert!(
            dir.is_dir(),
            "CLIPTRAIN_NCCL=1 needs {} (installed with CUDA builds of torch)",
            dir.display()
        );
    }
    let extra = std::env::var("CUDA_EXTRA_INCLUDE").expect(
        "CLIPTRAIN_NCCL=1 needs CUDA_EXTRA_INCLUDE: the include folder of the nvidia-cuda-crt and \
         nvidia-cuda-cccl wheels (crt/host_config.h, nv/target); see docs/distributed.md, \"NCCL\"",
    );
    build
        .include(cuda)
        .include(nccl)
        .include(extra)
        .define("USE_C10D_NCCL", None)
        .define("USE_CUDA", None)
        .define("CLIPTRAIN_WITH_NCCL", None)
        .file("csrc/dist_nccl.cpp");
}

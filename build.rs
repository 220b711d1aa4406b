//! Links the binary against the same libtorch as torch-sys and compiles our C++ shim.
//!
//! Three things tch's own build script does not do for a downstream binary:
//! - an rpath to the torch `lib` folder, so `cliptrain` runs without `LD_LIBRARY_PATH`;
//! - `--no-as-needed -ltorch`, because rustc links with `--as-needed` by default, which drops
//!   `libtorch_cuda.so` (no symbol is referenced directly) and CUDA then silently disappears;
//! - the `csrc/` shim for the libtorch C++ API that tch does not expose.
use std::path::PathBuf;

fn main() {
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report DEP_TCH_LIBTORCH_LIB; is torch-sys a direct dependency?",
    ));
    let torch_root = lib
        .parent()
        .expect("torch lib folder has a parent")
        .to_path_buf();
    let include = torch_root.join("include");

    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // PyPI torch >= 2.7 (and every libtorch 2.11 download) uses the C++11 ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag("-w")
        .file("csrc/shim.cpp")
        .compile("cliptrain_shim");

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
}

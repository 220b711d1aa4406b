// C ABI over the parts of the libtorch C++ API that tch 0.24 does not expose.
//
// Conventions, kept by every function here so the Rust side (src/shim.rs) stays uniform:
// - strings are returned malloc'd and released with cliptrain_free_str;
// - no C++ exception crosses the boundary: functions that can throw return non-zero and put the
//   message in *err (malloc'd), so Rust turns it into an error instead of aborting the process.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>  // TORCH_VERSION

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace {
char* dup(const std::string& s) { return strdup(s.c_str()); }
}  // namespace

extern "C" {

void cliptrain_free_str(char* s) { free(s); }

// Version of the libtorch headers this binary was compiled against.
char* cliptrain_torch_version() { return dup(TORCH_VERSION); }

// libtorch's own build description (compiler, BLAS, CUDA/cuDNN versions it was built with).
char* cliptrain_build_config() { return dup(at::show_config()); }

// Intra/inter-op thread pools and the parallel backend in use.
char* cliptrain_parallel_info() { return dup(at::get_parallel_info()); }

// The SIMD level ATen's CPU kernels dispatch to (e.g. AVX2, AVX512).
char* cliptrain_cpu_capability() { return dup(at::get_cpu_capability()); }

// CUDA runtime and cuDNN versions libtorch_cuda was built with (e.g. 13000 and 91900). They come
// from the hooks libtorch_cuda registers when it is loaded, so success proves the CUDA backend is
// linked into this process whether or not a GPU is present -- exactly what rustc's --as-needed
// silently breaks. Returns non-zero with *err set when the backend is missing.
int cliptrain_cuda_versions(int64_t* cudart, int64_t* cudnn, char** err) {
  try {
    const auto& hooks = at::detail::getCUDAHooks();
    *cudart = hooks.versionCUDART();
    *cudnn = hooks.versionCuDNN();
    return 0;
  } catch (const std::exception& e) {
    if (err) *err = dup(e.what());
    return 1;
  }
}

}  // extern "C"

// Whether `t` is the only handle on its tensor and the only tensor on its storage: no other
// at::Tensor (a batch handed out, a view, an autograd-saved input) can see its memory. The data
// loader reuses a batch buffer only then.
extern "C" int cliptrain_tensor_is_exclusive(const at::Tensor* t) {
  if (!t->defined() || !t->has_storage()) return 0;
  return t->use_count() == 1 && t->storage().use_count() == 1 ? 1 : 0;
}

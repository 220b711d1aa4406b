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

// ---- gradients ----------------------------------------------------------------------------
// Drops a tensor's gradient (torch's `zero_grad(set_to_none=True)`): tch can only zero it in
// place, which keeps the memory alive and makes "no gradient this step" indistinguishable from a
// zero gradient, and the optimizer skips parameters whose gradient is undefined.
extern "C" void cliptrain_tensor_clear_grad(const at::Tensor* t) {
  if (t->defined()) t->mutable_grad().reset();
}

// ---- autocast -------------------------------------------------------------------------------
// tch::autocast only toggles CUDA autocast with its default dtype (fp16) and is a no-op without a
// GPU; these enter/exit a scope for an explicit device type and dtype, restoring the previous
// state on exit so scopes nest. device: 0 = CPU, 1 = CUDA. dtype: 0 = bf16, 1 = fp16.
#include <ATen/autocast_mode.h>

namespace {
at::DeviceType autocast_device(int device) { return device == 1 ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" int cliptrain_autocast_enter(int device, int dtype, int* prev_enabled,
                                        int* prev_dtype, char** err) {
  try {
    auto dev = autocast_device(device);
    *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_dtype(dev, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception& e) {
    if (err) *err = dup(e.what());
    return 1;
  }
}

extern "C" void cliptrain_autocast_exit(int device, int prev_enabled, int prev_dtype) {
  try {
    auto dev = autocast_device(device);
    // The cast cache holds lower-precision copies of weights; it must not outlive the outermost
    // scope (weights change at the next optimizer step).
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
  } catch (const std::exception&) {
    // Called from a destructor on the Rust side: nothing sensible to report, and an exception
    // must not cross the C boundary.
  }
}

// ---- pinned host memory -----------------------------------------------------------------------
// An uninitialised CPU tensor in page-locked memory from libtorch's caching host allocator (what
// `pin_memory()` uses, without allocating a pageable tensor first). dtype is an at::ScalarType
// value. Throws without a usable CUDA backend; that comes back as *err. The caller owns *out.
#include <ATen/ops/empty.h>

extern "C" int cliptrain_empty_pinned(const int64_t* sizes, int ndim, int dtype, at::Tensor** out,
                                      char** err) {
  try {
    auto options = at::TensorOptions()
                       .dtype(static_cast<at::ScalarType>(dtype))
                       .device(at::kCPU)
                       .pinned_memory(true);
    *out = new at::Tensor(at::empty(at::IntArrayRef(sizes, ndim), options));
    return 0;
  } catch (const std::exception& e) {
    if (err) *err = dup(e.what());
    return 1;
  }
}

// C ABI over ATen's multi-tensor optimizer kernels, which tch 0.24 does not expose (its codegen
// drops the `_fused_adam*`, `_foreach*` and `_amp_foreach*` ops).
//
// Same conventions as csrc/shim.cpp: no C++ exception crosses the boundary; a function that can
// throw returns non-zero and puts the message, malloc'd, in *err. Tensor lists arrive as arrays
// of `const at::Tensor*` (tch's C_tensor) and are copied into handles that share the tensors'
// storage, so in-place kernels write through to the caller's tensors.
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <vector>

namespace {

int fail(char** err, const std::exception& e) {
  if (err) *err = strdup(e.what());
  return 1;
}

std::vector<at::Tensor> list(const at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

}  // namespace

extern "C" {

// One AdamW step over `n` parameters sharing lr and weight decay, as torch.optim's `_fused_adam`
// does it for one device: the fp32 scalar `steps` are incremented before the kernel (its bias
// correction uses the new count) and, when `found_inf` (fp32, one element) is given, decremented
// by it afterwards, so a skipped step (found_inf = 1, the kernel then changes nothing) leaves
// them as they were. Nothing here reads a tensor on the host.
int cliptrain_fused_adamw_step(const at::Tensor* const* params, const at::Tensor* const* grads,
                               const at::Tensor* const* exp_avgs,
                               const at::Tensor* const* exp_avg_sqs,
                               const at::Tensor* const* steps, size_t n, double lr, double beta1,
                               double beta2, double weight_decay, double eps,
                               const at::Tensor* found_inf, char** err) {
  try {
    auto step_list = list(steps, n);
    std::optional<at::Tensor> inf;
    if (found_inf) inf = *found_inf;
    at::_foreach_add_(step_list, at::Scalar(1.0));
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n),
                      /*max_exp_avg_sqs=*/{}, step_list, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
    // The steps are 0-dim; torch's `_foreach_sub_(steps, [found_inf] * n)` broadcasts the
    // one-element found_inf to [1] and fails on CPU, the 0-dim view does not.
    if (inf) at::_foreach_add_(step_list, inf->reshape({}), /*alpha=*/-1);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

// Per-tensor L2 norms of `n` tensors (`torch._foreach_norm`), returned as new tensors in `out`
// (released by the caller, as tch releases any tensor it owns).
int cliptrain_foreach_norm(const at::Tensor* const* ts, size_t n, at::Tensor** out, char** err) {
  try {
    auto norms = at::_foreach_norm(list(ts, n));
    for (size_t i = 0; i < n; ++i) out[i] = new at::Tensor(std::move(norms[i]));
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

// Multiplies `n` tensors in place by the 0-dim tensor `factor`, which stays on the device
// (gradient clipping without reading the norm back).
int cliptrain_foreach_mul_(const at::Tensor* const* ts, size_t n, const at::Tensor* factor,
                           char** err) {
  try {
    at::_foreach_mul_(list(ts, n), *factor);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

// Moves `n` tensors towards `n` others by `weight` in place (`torch._foreach_lerp_`): the
// exponential moving average of the weights, one multi-tensor kernel per call.
int cliptrain_foreach_lerp_(const at::Tensor* const* ts, const at::Tensor* const* targets, size_t n,
                            double weight, char** err) {
  try {
    at::_foreach_lerp_(list(ts, n), list(targets, n), at::Scalar(weight));
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

// fp16 loss scaling's unscale: multiplies every gradient by `inv_scale` (one element) and sets
// `found_inf` (fp32, one element) to 1 if any of them holds an inf or NaN; it is never reset to
// 0 here, so one flag can collect several calls.
int cliptrain_amp_unscale_(const at::Tensor* const* grads, size_t n, const at::Tensor* found_inf,
                           const at::Tensor* inv_scale, char** err) {
  try {
    at::Tensor flag = *found_inf;  // shares the storage the kernel writes
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), flag, *inv_scale);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

}  // extern "C"

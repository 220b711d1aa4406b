// The NCCL process group for CUDA tensors. Compiled only with CLIPTRAIN_NCCL=1: the torch wheel's
// ProcessGroupNCCL.hpp includes CUDA runtime and NCCL headers (from the nvidia-* wheels; see
// build.rs). The symbols live in libtorch_cuda.so, which the binary already links.
#include "dist.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> cliptrain_nccl_backend(c10::intrusive_ptr<c10d::Store> store,
                                                         int rank, int world_size,
                                                         std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  // The watchdog aborts collectives that exceed this, so a hung rank ends the job with an error
  // (TORCH_NCCL_ASYNC_ERROR_HANDLING decides whether that also tears the process down).
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, opts);
}

// Types shared by csrc/dist.cpp (store, Gloo, collectives) and csrc/dist_nccl.cpp (the NCCL
// backend, compiled only with CLIPTRAIN_NCCL=1 because it needs CUDA headers).
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>

// One process group and the store its ranks met through (kept alive with it).
struct CliptrainDist {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};

// An all-reduce in flight.
struct CliptrainWork {
  c10::intrusive_ptr<c10d::Work> work;
};

#ifdef CLIPTRAIN_WITH_NCCL
// Defined in dist_nccl.cpp; throws like any c10d constructor.
c10::intrusive_ptr<c10d::Backend> cliptrain_nccl_backend(c10::intrusive_ptr<c10d::Store> store,
                                                         int rank, int world_size,
                                                         std::chrono::milliseconds timeout);
#endif

// C ABI over c10d: a TCPStore rendezvous and a process group (Gloo for CPU tensors, NCCL for CUDA
// tensors when built with CLIPTRAIN_WITH_NCCL), with the collectives data-parallel training needs.
// Safe Rust wrappers: src/dist/group.rs.
//
// Same conventions as shim.cpp: no C++ exception crosses the boundary; every function that can
// throw returns non-zero and puts a malloc'd message in *err, so a dead peer or a timeout becomes
// a Rust error instead of std::terminate.
#include "dist.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using c10d::ProcessGroupGloo;

namespace {

// Variadic so that commas inside the body do not split it into macro arguments.
#define CLIPTRAIN_GUARD(...)                     \
  try {                                          \
    __VA_ARGS__                                  \
  } catch (const std::exception& e) {            \
    if (err) *err = strdup(e.what());            \
    return 1;                                    \
  } catch (...) {                                \
    if (err) *err = strdup("unknown C++ error"); \
    return 1;                                    \
  }

// Which local interface Gloo binds to. GLOO_SOCKET_IFNAME wins (torch's convention); a loopback
// master means a single-host job, where 127.0.0.1 always works; otherwise the address this host's
// name resolves to, as torch.distributed does.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (master == "localhost" || master.rfind("127.", 0) == 0) {
    return ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return ProcessGroupGloo::createDefaultDevice();
}

void wait(CliptrainDist* d, const c10::intrusive_ptr<c10d::Work>& work) {
  // Gloo enforces the group timeout itself and throws; the explicit bound also covers backends
  // whose wait() would otherwise block forever.
  work->wait(d->timeout);
}

}  // namespace

extern "C" {

int cliptrain_dist_new(const char* master_addr, uint16_t master_port, int rank, int world_size,
                       int backend, int64_t timeout_ms, CliptrainDist** out, char** err) {
  CLIPTRAIN_GUARD({
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions o;
    o.port = master_port;
    o.isServer = rank == 0;
    o.numWorkers = world_size;
    o.waitWorkers = true;
    o.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), o);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == 0) {
      auto opts = ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(gloo_device(master_addr));
      pg = c10::make_intrusive<ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>("gloo/", store), rank, world_size, opts);
    } else {
#ifdef CLIPTRAIN_WITH_NCCL
      pg = cliptrain_nccl_backend(c10::make_intrusive<c10d::PrefixStore>("nccl/", store), rank,
                                  world_size, timeout);
#else
      throw std::runtime_error(
          "this cliptrain was built without NCCL (CUDA tensors need it); rebuild with "
          "CLIPTRAIN_NCCL=1, see docs/distributed.md, \"NCCL\"");
#endif
    }
    *out = new CliptrainDist{store, pg, timeout};
    return 0;
  })
}

void cliptrain_dist_free(CliptrainDist* d) {
  try {
    delete d;
  } catch (...) {
    // A destructor that throws (a broken connection while shutting down) must not abort the
    // process that is already reporting the real error.
  }
}

int cliptrain_dist_has_nccl() {
#ifdef CLIPTRAIN_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// op: 0 = sum, 1 = average. In place.
int cliptrain_dist_all_reduce(CliptrainDist* d, const at::Tensor* t, int op, char** err) {
  CLIPTRAIN_GUARD({
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    wait(d, d->pg->allreduce(v, o));
    return 0;
  })
}

// Starts an in-place all-reduce and returns without waiting, so several buckets are in flight
// at once; finish each with cliptrain_dist_work_wait (which also frees the handle).
int cliptrain_dist_all_reduce_start(CliptrainDist* d, const at::Tensor* t, int op,
                                    CliptrainWork** work, char** err) {
  CLIPTRAIN_GUARD({
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = op == 1 ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    *work = new CliptrainWork{d->pg->allreduce(v, o)};
    return 0;
  })
}

int cliptrain_dist_work_wait(CliptrainDist* d, CliptrainWork* work, char** err) {
  // Freed on every path: the caller never touches the handle again.
  std::unique_ptr<CliptrainWork> owned(work);
  CLIPTRAIN_GUARD({
    wait(d, owned->work);
    return 0;
  })
}

void cliptrain_dist_work_free(CliptrainWork* work) {
  try {
    delete work;
  } catch (...) {
  }
}

// out: [world_size * n, ...] receiving every rank's `in` ([n, ...], same shape on all ranks) in
// rank order.
int cliptrain_dist_all_gather(CliptrainDist* d, const at::Tensor* out, const at::Tensor* in,
                              char** err) {
  CLIPTRAIN_GUARD({
    at::Tensor o = *out;
    at::Tensor i = *in;
    wait(d, d->pg->_allgather_base(o, i));
    return 0;
  })
}

int cliptrain_dist_broadcast(CliptrainDist* d, const at::Tensor* t, int root, char** err) {
  CLIPTRAIN_GUARD({
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    wait(d, d->pg->broadcast(v, o));
    return 0;
  })
}

int cliptrain_dist_barrier(CliptrainDist* d, char** err) {
  CLIPTRAIN_GUARD({
    wait(d, d->pg->barrier());
    return 0;
  })
}

}  // extern "C"

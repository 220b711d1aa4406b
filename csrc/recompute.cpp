// Activation checkpointing for blocks written in Rust: a custom autograd function whose forward
// runs the block without recording a graph (so its activations are freed at once) and whose
// backward runs it again with grad enabled, under the autocast state of the forward, and
// differentiates that recomputation — torch.utils.checkpoint's non-reentrant idea, for a block
// reached through a C callback. libtorch's C++ API has no checkpoint utility and tch none either.
//
// Same conventions as csrc/shim.cpp: no C++ exception crosses the C boundary. The block is an
// opaque `user` pointer with two callbacks: `run` (x -> new at::Tensor*, nullptr on failure) and
// `release`, which the graph node calls when it is destroyed, so the block lives exactly as long
// as the graph that may recompute it.
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <vector>

namespace {

using RunFn = at::Tensor* (*)(void* user, const at::Tensor* x);
using ReleaseFn = void (*)(void* user);

// Owns the Rust block; stored in the node's saved data, so released with the graph.
struct Block : torch::CustomClassHolder {
  void* user;
  RunFn run;
  ReleaseFn release;
  Block(void* u, RunFn r, ReleaseFn rel) : user(u), run(r), release(rel) {}
  ~Block() override { release(user); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor* y = run(user, &x);
    if (!y) throw std::runtime_error("the checkpointed block failed (see the log above)");
    at::Tensor out = *y;
    delete y;
    return out;
  }
};

// Sets autocast for one device type to a saved state, and back on scope exit.
struct AutocastAs {
  at::DeviceType dev;
  bool prev_enabled;
  at::ScalarType prev_dtype;
  AutocastAs(at::DeviceType d, bool enabled, at::ScalarType dtype)
      : dev(d),
        prev_enabled(at::autocast::is_autocast_enabled(d)),
        prev_dtype(at::autocast::get_autocast_dtype(d)) {
    at::autocast::set_autocast_dtype(dev, dtype);
    at::autocast::set_autocast_enabled(dev, enabled);
  }
  ~AutocastAs() {
    at::autocast::set_autocast_enabled(dev, prev_enabled);
    at::autocast::set_autocast_dtype(dev, prev_dtype);
  }
};

struct Recompute : torch::autograd::Function<Recompute> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, at::TensorList params,
                                                const c10::intrusive_ptr<Block>& block) {
    // Runs with grad mode off (custom functions do): nothing of the block's inside is kept.
    auto dev = x.device().type();
    ctx->saved_data["block"] = at::IValue::make_capsule(block);
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(dev);
    ctx->saved_data["dtype"] = at::autocast::get_autocast_dtype(dev);
    ctx->saved_data["x_requires_grad"] = x.requires_grad();
    std::vector<at::Tensor> keep{x};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    return {(*block)(x)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto capsule = ctx->saved_data["block"].toCapsule();
    const Block& block = *static_cast<Block*>(capsule.get());
    bool x_grad = ctx->saved_data["x_requires_grad"].toBool();
    at::Tensor x = saved[0].detach().requires_grad_(x_grad);
    // Differentiate with respect to what needs a gradient: the input when it did, and the
    // parameters that are not frozen (asking autograd about the others is an error).
    std::vector<at::Tensor> wrt;
    std::vector<size_t> slot;
    if (x_grad) {
      wrt.push_back(x);
      slot.push_back(0);
    }
    for (size_t i = 1; i < saved.size(); ++i) {
      if (saved[i].requires_grad()) {
        wrt.push_back(saved[i]);
        slot.push_back(i);
      }
    }
    // One gradient per input of `forward`: x, each parameter, and none for the block.
    torch::autograd::variable_list grads(saved.size() + 1);
    if (wrt.empty()) return grads;
    at::Tensor y;
    {
      at::AutoGradMode grad_mode(true);
      AutocastAs autocast(x.device().type(), ctx->saved_data["autocast"].toBool(),
                          ctx->saved_data["dtype"].toScalarType());
      y = block(x);
    }
    auto got = torch::autograd::grad({y}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t k = 0; k < got.size(); ++k) grads[slot[k]] = got[k];
    return grads;
  }
};

int fail(char** err, const std::exception& e) {
  if (err) *err = strdup(e.what());
  return 1;
}

}  // namespace

extern "C" {

// `run(user, x)` as one checkpointed block: with grad mode on, its activations are dropped
// after the forward and recomputed in the backward; otherwise it is just run. Takes ownership
// of `user` in every case (`release` is called exactly once, when nothing can run it again).
int cliptrain_recompute_in_backward(const at::Tensor* x, const at::Tensor* const* params,
                                    size_t n, RunFn run, void* user, ReleaseFn release,
                                    at::Tensor** out, char** err) {
  c10::intrusive_ptr<Block> block;
  try {
    block = c10::make_intrusive<Block>(user, run, release);
  } catch (const std::exception& e) {
    release(user);
    return fail(err, e);
  }
  try {
    if (!at::GradMode::is_enabled()) {
      *out = new at::Tensor((*block)(*x));
      return 0;
    }
    std::vector<at::Tensor> ps;
    ps.reserve(n);
    for (size_t i = 0; i < n; ++i) ps.push_back(*params[i]);
    auto y = Recompute::apply(*x, at::TensorList(ps), block);
    *out = new at::Tensor(y[0]);
    return 0;
  } catch (const std::exception& e) {
    return fail(err, e);
  }
}

// Whether autograd records operations now (at::GradMode): LoRA's dropout is active only where
// a training forward records a graph, not under no_grad (evaluation, embedding).
int cliptrain_grad_enabled(void) { return at::GradMode::is_enabled() ? 1 : 0; }

}  // extern "C"

#pragma once
// Declaration-only stand-in; see csrc/gloo_decls/README.md. ProcessGroupGloo.hpp holds
// std::shared_ptr<gloo::Context> members and its inline setTimeout() calls the one method
// declared here (defined in libtorch_cpu.so, which bundles gloo).
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo

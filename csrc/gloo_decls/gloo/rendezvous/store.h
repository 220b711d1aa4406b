#pragma once
// Declaration-only stand-in; see csrc/gloo_decls/README.md. ProcessGroupGloo::GlooStore derives
// from this class inline in the header, so it must be complete with the virtuals it overrides.
// Its vtable here is not gloo's: never instantiate GlooStore from code built against this file.
#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys,
                    const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace rendezvous
}  // namespace gloo

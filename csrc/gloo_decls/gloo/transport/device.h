#pragma once
// Declaration-only stand-in; see csrc/gloo_decls/README.md.
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo

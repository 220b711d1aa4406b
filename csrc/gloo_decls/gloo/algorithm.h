#pragma once
// Declaration-only stand-in; see csrc/gloo_decls/README.md.

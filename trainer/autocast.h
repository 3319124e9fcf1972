// AutocastGuard: bf16 autocast for the forward pass on a GPU, off again at scope exit (the
// training step and evaluation both run their forward under it).
#pragma once

#include <ATen/autocast_mode.h>

namespace vit::train {

class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
  }

 private:
  bool enabled_;
};

}  // namespace vit::train

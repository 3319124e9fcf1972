// WaitClock: the time a loader's next() spent waiting for data (Loader::wait_seconds), shared
// by the resident and streaming loaders.
#pragma once

#include <chrono>

namespace vit::data {

class WaitClock {
 public:
  using Clock = std::chrono::steady_clock;
  WaitClock() { reset(); }
  // Adds the time from `start` to now as waiting.
  void add_since(Clock::time_point start) {
    waited_ += std::chrono::duration<double>(Clock::now() - start).count();
  }
  double seconds() const { return waited_; }
  void reset() { waited_ = 0.0; }

 private:
  double waited_ = 0.0;
};

}  // namespace vit::data

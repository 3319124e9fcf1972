// WaitClock: the share of wall time a loader's next() spent waiting for data
// (Loader::wait_fraction), shared by the resident and streaming loaders.
#pragma once

#include <algorithm>
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
  double fraction() const {
    const double wall = std::chrono::duration<double>(Clock::now() - since_).count();
    return wall > 0 ? std::min(1.0, waited_ / wall) : 0.0;
  }
  void reset() {
    since_ = Clock::now();
    waited_ = 0.0;
  }

 private:
  Clock::time_point since_;
  double waited_ = 0.0;
};

}  // namespace vit::data

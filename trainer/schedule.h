// Learning-rate schedule: linear warmup from 0 to the peak, then cosine, linear or constant
// decay to `min_lr` at the last step. A pure function of the step, so resume needs only the
// step count.
#pragma once

#include <cstdint>

#include "trainer/config.h"

namespace vit::train {

class LrSchedule {
 public:
  LrSchedule(const ScheduleConfig& config, double peak_lr, int64_t total_steps);
  // The learning rate for optimiser step `step` (0-based).
  double at(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  ScheduleConfig config_;
  double peak_;
  int64_t total_;
  int64_t warmup_;
};

}  // namespace vit::train

// Learning-rate schedule: linear warmup from 0 to the peak, then cosine, linear or constant
// decay to `min_lr` at the last step. A pure function of the step, so resume needs only the
// step count.
#pragma once

#include <cstdint>
#include <string>

namespace vit::train {

// The YAML section `schedule` (trainer/config.h loads it; docs/config.md lists the keys).
struct ScheduleConfig {
  std::string name = "cosine";  // cosine | linear | constant (after warmup)
  int64_t warmup_steps = -1;    // -1: use warmup_fraction of the total steps
  double warmup_fraction = 0.05;
  double min_lr = 0.0;  // floor reached at the last step (cosine / linear)
};
// Range and choice checks of the section alone; messages name `schedule.<key>` (ConfigError).
void validate(const ScheduleConfig& config);

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

#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"

namespace vit::train {

LrSchedule::LrSchedule(const ScheduleConfig& config, double peak_lr, int64_t total_steps)
    : config_(config), peak_(peak_lr), total_(std::max<int64_t>(total_steps, 1)) {
  warmup_ = config.warmup_steps >= 0 ? config.warmup_steps
                                     : static_cast<int64_t>(std::llround(config.warmup_fraction * total_));
  warmup_ = std::min(warmup_, total_);
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_) return peak_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (config_.name == "constant") return peak_;
  const int64_t decay_steps = total_ - warmup_;
  if (decay_steps <= 1) return peak_;
  // Progress 0 at the first step after warmup, 1 at the last step.
  double t = std::min(1.0, static_cast<double>(step - warmup_) / static_cast<double>(decay_steps - 1));
  double factor = config_.name == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * t)) : 1.0 - t;
  return config_.min_lr + (peak_ - config_.min_lr) * factor;
}

void validate(const ScheduleConfig& c) {
  VIT_CHECK(c.name == "cosine" || c.name == "linear" || c.name == "constant", ConfigError,
            "schedule.name: must be cosine, linear or constant, got '", c.name, "'");
  VIT_CHECK(c.warmup_fraction >= 0 && c.warmup_fraction < 1, ConfigError,
            "schedule.warmup_fraction: must be in [0, 1)");
  VIT_CHECK(c.min_lr >= 0, ConfigError, "schedule.min_lr: must be in [0, optim.lr]");
}

}  // namespace vit::train

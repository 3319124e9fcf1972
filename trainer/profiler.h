// logging.profile_step: profile a few training steps with LibTorch's Kineto profiler (the same
// one torch.profiler uses), write a Chrome trace (run.dir/profile_rank<r>.json, open it in
// chrome://tracing or Perfetto) and log where the GPU time went: the top kernels by total time
// and the share of the profiled wall time the GPU was busy.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace vit::train {

class StepProfiler {
 public:
  static constexpr int64_t kSteps = 5;
  // first_step <= 0 disables it.
  StepProfiler(const std::string& run_dir, int64_t first_step, int rank, const torch::Device& device);
  void before_step(int64_t step);  // step: 1-based number of the step about to run
  void after_step(int64_t step);
  // At the end of training: a window the run did not fill is stopped and reported here (a
  // profiler left running crashes the process at exit).
  void finish(int64_t last_step);

 private:
  std::string run_dir_;
  int64_t first_;
  int rank_;
  torch::Device device_;
  void stop(int64_t last_step);
  bool active_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vit::train

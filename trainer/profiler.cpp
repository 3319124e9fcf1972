#include "trainer/profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <map>

#include "core/log.h"
#include "core/strings.h"

namespace vit::train {
namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

StepProfiler::StepProfiler(const std::string& run_dir, int64_t first_step, int rank, const torch::Device& device)
    : run_dir_(run_dir), first_(first_step), rank_(rank), device_(device) {}

void StepProfiler::before_step(int64_t step) {
  if (first_ <= 0 || step != first_) return;
  std::set<ActivityType> activities{ActivityType::CPU};
  if (device_.is_cuda()) {
    activities.insert(ActivityType::CUDA);
    torch::cuda::synchronize(device_.index());
  }
  ProfilerConfig config(ProfilerState::KINETO);
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  active_ = true;
  start_ = std::chrono::steady_clock::now();
}

void StepProfiler::after_step(int64_t step) {
  if (active_ && step == first_ + kSteps - 1) stop(step);
}

void StepProfiler::finish(int64_t last_step) {
  if (active_) stop(last_step);  // the run ended inside the window: report the steps it holds
}

void StepProfiler::stop(int64_t last_step) {
  const int64_t steps = std::max<int64_t>(1, last_step - first_ + 1);
  if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  const double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start_).count();
  auto result = prof::disableProfiler();
  active_ = false;
  const std::string path = run_dir_ + "/profile_rank" + std::to_string(rank_) + ".json";
  result->save(path);

  // GPU time by kernel name, over the profiled steps.
  std::map<std::string, std::pair<double, int64_t>> by_name;  // total us, count
  double gpu_us = 0.0;
  int64_t launches = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    double us = static_cast<double>(e.durationNs()) / 1e3;
    auto& slot = by_name[e.name()];
    slot.first += us;
    slot.second += 1;
    gpu_us += us;
    ++launches;
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  log_info("profile of steps ", first_, "-", last_step, ": wall ", format_duration(wall_us / 1e6),
           " per step ", format_duration(wall_us / 1e6 / steps), ", GPU busy ",
           static_cast<int>(100.0 * gpu_us / std::max(wall_us, 1.0)), "%, ", launches / steps,
           " GPU activities per step; trace: ", path);
  for (size_t i = 0; i < std::min<size_t>(rows.size(), 20); ++i) {
    const auto& [name, v] = rows[i];
    log_info(str("  ", static_cast<int>(1000.0 * v.first / std::max(gpu_us, 1.0)) / 10.0, "% ",
                 format_duration(v.first / 1e6 / steps), "/step x", v.second / steps, "  ", name.substr(0, 110)));
  }
}

}  // namespace vit::train

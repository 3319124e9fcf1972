#include "trainer/device_stats.h"

namespace vit::train {

double peak_memory_bytes(const torch::Device&) { return 0.0; }
void reset_peak_memory(const torch::Device&) {}
void wait_for_device(const torch::Device&) {}

}  // namespace vit::train

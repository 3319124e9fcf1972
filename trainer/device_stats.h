// Device facts for reports: peak GPU memory held by tensors (LibTorch's caching allocator), and
// waiting for queued GPU work (for timing).
// The CUDA implementation is compiled only when the build has CUDA (device_stats_cuda.cpp);
// device_stats_cpu.cpp answers 0 otherwise.
#pragma once

#include <torch/torch.h>

namespace vit::train {

// Peak bytes allocated on `device` since the last reset; 0 for CPU devices.
double peak_memory_bytes(const torch::Device& device);
void reset_peak_memory(const torch::Device& device);

// Blocks until the work queued on the current stream of `device` has run; no-op for CPU devices.
void wait_for_device(const torch::Device& device);

}  // namespace vit::train

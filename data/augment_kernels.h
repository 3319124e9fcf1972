// Raw CUDA launchers behind augment.h's run_layers / run_erase (no LibTorch types: nvcc compiles
// augment_kernels.cu without the heavy headers). The arithmetic is augment_ops.h's, so the GPU
// gives the pixels the CPU loops of augment_cpu.cpp give.
//
// All pointers are device pointers; images are float [B, 3, H, W], contiguous. Launches go on
// `stream` and return cudaGetLastError().
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "data/augment_ops.h"

namespace vit::data::kernels {

// Layer `layer` of every image's plan: `in` -> `out` (distinct buffers). `stats`: scratch of B
// ImageStats, filled here for the images whose op needs them.
cudaError_t launch_augment_layer(const float* in, float* out, int64_t batch, int64_t height, int64_t width,
                                 const aug::SamplePlan* plans, int layer, aug::ImageStats* stats, float fill_r,
                                 float fill_g, float fill_b, cudaStream_t stream);

// Random erasing of every image's planned box, in place, on normalised images.
cudaError_t launch_erase(float* images, int64_t batch, int64_t height, int64_t width, const aug::SamplePlan* plans,
                         cudaStream_t stream);

}  // namespace vit::data::kernels

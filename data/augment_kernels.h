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

// One image of a crop-resize batch (GPU JPEG decode, gpu_decode.h): interleaved RGB at `src`
// (`pitch` bytes a row), the box to read in source pixels, the flip, and the output slot.
struct ResizeJob {
  const uint8_t* src;
  int64_t pitch;
  int32_t height, width;
  double top, left, box_h, box_w;
  int32_t flip, slot;
};

// transforms.h's resample_into for every job at once: the box of each image, antialiased when
// shrinking, mirrored when asked, into slot `slot` of `out` (uint8 [B, 3, out_h, out_w]). The
// same taps, weights and order of sums as the host code (no fused multiply-adds), so the same
// decoded pixels give the same bytes. `jobs` is a device array.
cudaError_t launch_crop_resize(const ResizeJob* jobs, int64_t num_jobs, uint8_t* out, int64_t out_h, int64_t out_w,
                               bool bicubic, cudaStream_t stream);

// Random erasing of every image's planned box, in place, on normalised images.
cudaError_t launch_erase(float* images, int64_t batch, int64_t height, int64_t width, const aug::SamplePlan* plans,
                         cudaStream_t stream);

}  // namespace vit::data::kernels

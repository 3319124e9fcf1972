// Raw CUDA launcher behind weight_casts.h (no LibTorch types: nvcc compiles the .cu file without
// the heavy headers): fp32 tensors cast to bf16 into one buffer, all of them in one kernel.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace vit::model::kernels {

constexpr int64_t kCastThreads = 256;
constexpr int64_t kCastChunk = 8192;  // elements per block (a multiple of 4: float4 loads)

// One tensor: n fp32 values at src (16-byte aligned) cast to bf16 bits at dst (8-byte aligned).
struct CastSegment {
  const float* src;
  uint16_t* dst;
  int64_t n;
};

// Block b casts elements [start, start + kCastChunk) of segment `segment` (start a multiple of
// kCastChunk, so a block never spans two tensors).
struct CastBlock {
  int64_t segment;
  int64_t start;
};

// Both tables live on the device. Rounds to nearest even, as Tensor::to(kBFloat16).
cudaError_t launch_cast_to_bf16(const CastSegment* segments, const CastBlock* blocks, int64_t num_blocks,
                                cudaStream_t stream);

}  // namespace vit::model::kernels

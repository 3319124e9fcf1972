// bf16 bit helpers and the alignment check shared by the fused kernels (*_kernels.cu). Tensors
// cross into the kernels as raw bits (uint16_t), so the .cu files need no LibTorch headers.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace vit::model::kernels {

__device__ __forceinline__ float bf16_to_float(uint16_t bits) { return __bfloat162float(__ushort_as_bfloat16(bits)); }

// Round to nearest even, once.
__device__ __forceinline__ uint16_t float_to_bf16(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

// Two bf16 values packed in 32 bits (the lower address in the low half), as fp32.
__device__ __forceinline__ float low_bf16(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float high_bf16(uint32_t pair) { return __uint_as_float(pair & 0xffff0000u); }

__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
  return static_cast<uint32_t>(float_to_bf16(low)) | (static_cast<uint32_t>(float_to_bf16(high)) << 16);
}

inline bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace vit::model::kernels

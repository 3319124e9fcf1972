// One kernel for every fp32 -> bf16 weight cast of a step (see cast_kernels.h, weight_casts.h).
#include "model/kernels/cast_kernels.h"

#include "model/kernels/bf16_bits.cuh"

namespace vit::model::kernels {
namespace {

__global__ void __launch_bounds__(kCastThreads)
    cast_to_bf16(const CastSegment* __restrict__ segments, const CastBlock* __restrict__ blocks) {
  const CastBlock b = blocks[blockIdx.x];
  const CastSegment s = segments[b.segment];
  const int64_t end = b.start + kCastChunk < s.n ? b.start + kCastChunk : s.n;
  for (int64_t i = b.start + 4 * static_cast<int64_t>(threadIdx.x); i < end; i += 4 * kCastThreads) {
    if (i + 4 <= end) {
      const float4 v = *reinterpret_cast<const float4*>(s.src + i);
      *reinterpret_cast<uint2*>(s.dst + i) = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
    } else {
      for (int64_t j = i; j < end; ++j) s.dst[j] = float_to_bf16(s.src[j]);
    }
  }
}

}  // namespace

cudaError_t launch_cast_to_bf16(const CastSegment* segments, const CastBlock* blocks, int64_t num_blocks,
                                cudaStream_t stream) {
  if (num_blocks < 1 || num_blocks > 0x7fffffff) return cudaErrorInvalidValue;
  cast_to_bf16<<<static_cast<unsigned>(num_blocks), kCastThreads, 0, stream>>>(segments, blocks);
  return cudaGetLastError();
}

}  // namespace vit::model::kernels

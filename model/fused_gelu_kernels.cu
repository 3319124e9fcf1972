// GELU backward (exact, erf form) with the column sums of its output: the bias gradient of the
// Linear before the GELU, summed in the pass that writes grad_x instead of a second pass over it.
//
// Numerics: ATen's GeluBackward for bf16 (fp32 opmath, its constants and formula), grad_x
// rounded to bf16 once; the sums take grad_x in fp32 before that rounding.
#include "model/fused_gelu_kernels.h"

#include <cmath>

#include "model/bf16_bits.cuh"

namespace vit::model::kernels {
namespace {

// ATen's GeluBackwardCUDAKernelImpl (GeluType::None) in fp32.
__device__ __forceinline__ float gelu_grad(float dy, float x) {
  constexpr float kBeta = M_2_SQRTPI * M_SQRT1_2 * 0.5;
  constexpr float kAlpha = M_SQRT1_2;
  const float cdf = 0.5f * (1.f + erff(x * kAlpha));
  const float pdf = expf(-0.5f * x * x) * kBeta;
  return dy * (cdf + x * pdf);
}

__global__ void __launch_bounds__(kGeluThreads) gelu_backward_kernel(GeluBackwardArgs a) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kGeluThreads + threadIdx.x) * kGeluVector;
  if (col >= a.cols) return;
  const int64_t chunk = (a.rows + gridDim.y - 1) / gridDim.y;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t last = first + chunk < a.rows ? first + chunk : a.rows;
  float sum[kGeluVector] = {};
#pragma unroll 4
  for (int64_t row = first; row < last; ++row) {
    const int64_t off = row * a.cols + col;
    const uint4 x = *reinterpret_cast<const uint4*>(a.x + off);
    const uint4 dy = *reinterpret_cast<const uint4*>(a.grad_y + off);
    const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, dys[4] = {dy.x, dy.y, dy.z, dy.w};
    uint32_t out[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float g0 = gelu_grad(low_bf16(dys[k]), low_bf16(xs[k]));
      const float g1 = gelu_grad(high_bf16(dys[k]), high_bf16(xs[k]));
      sum[2 * k] += g0;
      sum[2 * k + 1] += g1;
      out[k] = pack_bf16(g0, g1);
    }
    *reinterpret_cast<uint4*>(a.grad_x + off) = make_uint4(out[0], out[1], out[2], out[3]);
  }
  float* partial = a.bias_partial + static_cast<int64_t>(blockIdx.y) * a.cols + col;
  *reinterpret_cast<float4*>(partial) = make_float4(sum[0], sum[1], sum[2], sum[3]);
  *reinterpret_cast<float4*>(partial + 4) = make_float4(sum[4], sum[5], sum[6], sum[7]);
}

}  // namespace

bool gelu_backward_supported(const GeluBackwardArgs& a) {
  return a.cols % kGeluVector == 0 && aligned(a.x, 16) && aligned(a.grad_y, 16) && aligned(a.grad_x, 16) &&
         aligned(a.bias_partial, 16);
}

cudaError_t launch_gelu_backward(const GeluBackwardArgs& a, int row_blocks, cudaStream_t stream) {
  if (!gelu_backward_supported(a) || row_blocks < 1) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((a.cols + kGeluBlockColumns - 1) / kGeluBlockColumns),
                  static_cast<unsigned>(row_blocks));
  gelu_backward_kernel<<<grid, kGeluThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace vit::model::kernels

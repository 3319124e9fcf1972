// Kernels that write a gradient the backward pass needs anyway and, in the same pass, the column
// sums of it: the bias gradient of the Linear that produced the matching forward output. One
// skeleton (rows_with_column_sums) with an operation per kernel:
//   - GELU backward (exact, erf form): ATen's GeluBackward for bf16 (fp32 opmath, its constants
//     and formula), grad_x rounded to bf16 once; the sums take grad_x in fp32 before rounding.
//   - The attention heads gather: dq, dk, dv copied into the qkv projection's gradient layout
//     (values unchanged); the sums are those of the bf16 values.
#include "model/bias_sum_kernels.h"

#include <cmath>

#include "model/bf16_bits.cuh"

namespace vit::model::kernels {
namespace {

// Each thread: kSumVector consecutive columns of the rows of its block. op(row, col, v) writes
// the output at (row, col..col+7) and returns those values in fp32 in v.
template <typename Op>
__global__ void __launch_bounds__(kSumThreads)
    rows_with_column_sums(Op op, int64_t rows, int64_t cols, float* __restrict__ bias_partial) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * kSumThreads + threadIdx.x) * kSumVector;
  if (col >= cols) return;
  const int64_t chunk = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t last = first + chunk < rows ? first + chunk : rows;
  float sum[kSumVector] = {};
#pragma unroll 4
  for (int64_t row = first; row < last; ++row) {
    float v[kSumVector];
    op(row, col, v);
#pragma unroll
    for (int k = 0; k < kSumVector; ++k) sum[k] += v[k];
  }
  float* partial = bias_partial + static_cast<int64_t>(blockIdx.y) * cols + col;
  *reinterpret_cast<float4*>(partial) = make_float4(sum[0], sum[1], sum[2], sum[3]);
  *reinterpret_cast<float4*>(partial + 4) = make_float4(sum[4], sum[5], sum[6], sum[7]);
}

// ATen's GeluBackwardCUDAKernelImpl (GeluType::None) in fp32.
__device__ __forceinline__ float gelu_grad(float dy, float x) {
  constexpr float kBeta = M_2_SQRTPI * M_SQRT1_2 * 0.5;
  constexpr float kAlpha = M_SQRT1_2;
  const float cdf = 0.5f * (1.f + erff(x * kAlpha));
  const float pdf = expf(-0.5f * x * x) * kBeta;
  return dy * (cdf + x * pdf);
}

struct GeluOp {
  GeluBackwardArgs a;
  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[kSumVector]) const {
    const int64_t off = row * a.cols + col;
    const uint4 x = *reinterpret_cast<const uint4*>(a.x + off);
    const uint4 dy = *reinterpret_cast<const uint4*>(a.grad_y + off);
    const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, dys[4] = {dy.x, dy.y, dy.z, dy.w};
    uint32_t out[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = gelu_grad(low_bf16(dys[k]), low_bf16(xs[k]));
      v[2 * k + 1] = gelu_grad(high_bf16(dys[k]), high_bf16(xs[k]));
      out[k] = pack_bf16(v[2 * k], v[2 * k + 1]);
    }
    *reinterpret_cast<uint4*>(a.grad_x + off) = make_uint4(out[0], out[1], out[2], out[3]);
  }
};

struct HeadsOp {
  HeadsGatherArgs a;
  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[kSumVector]) const {
    // Output column col = (s * H + h) * Dh + d; row = b * N + n. A group of 8 stays in one head
    // (Dh is a multiple of 8).
    const int64_t d = col % a.head_dim, sh = col / a.head_dim;
    const int s = static_cast<int>(sh / a.heads);
    const int64_t h = sh % a.heads, b = row / a.tokens, n = row % a.tokens;
    const uint16_t* src = a.grad[s] + b * a.stride[s][0] + h * a.stride[s][1] + n * a.stride[s][2] + d;
    const uint4 g = *reinterpret_cast<const uint4*>(src);
    const uint32_t gs[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) v[2 * k] = low_bf16(gs[k]), v[2 * k + 1] = high_bf16(gs[k]);
    *reinterpret_cast<uint4*>(a.grad_qkv + row * 3 * a.heads * a.head_dim + col) = g;
  }
};

template <typename Op>
cudaError_t launch(const Op& op, int64_t rows, int64_t cols, float* bias_partial, int row_blocks, cudaStream_t stream) {
  if (row_blocks < 1 || row_blocks > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>((cols + kSumBlockColumns - 1) / kSumBlockColumns),
                  static_cast<unsigned>(row_blocks));
  rows_with_column_sums<<<grid, kSumThreads, 0, stream>>>(op, rows, cols, bias_partial);
  return cudaGetLastError();
}

}  // namespace

bool gelu_backward_supported(const GeluBackwardArgs& a) {
  return a.cols % kSumVector == 0 && aligned(a.x, 16) && aligned(a.grad_y, 16) && aligned(a.grad_x, 16) &&
         aligned(a.bias_partial, 16);
}

bool heads_gather_supported(const HeadsGatherArgs& a) {
  if (a.head_dim % kSumVector != 0 || !aligned(a.grad_qkv, 16) || !aligned(a.bias_partial, 16)) return false;
  for (int s = 0; s < 3; ++s) {
    if (!aligned(a.grad[s], 16)) return false;
    for (int i = 0; i < 3; ++i) {
      if (a.stride[s][i] % kSumVector != 0) return false;
    }
  }
  return true;
}

cudaError_t launch_gelu_backward(const GeluBackwardArgs& a, int row_blocks, cudaStream_t stream) {
  if (!gelu_backward_supported(a)) return cudaErrorInvalidValue;
  return launch(GeluOp{a}, a.rows, a.cols, a.bias_partial, row_blocks, stream);
}

cudaError_t launch_heads_gather(const HeadsGatherArgs& a, int row_blocks, cudaStream_t stream) {
  if (!heads_gather_supported(a)) return cudaErrorInvalidValue;
  return launch(HeadsOp{a}, a.batch * a.tokens, 3 * a.heads * a.head_dim, a.bias_partial, row_blocks, stream);
}

}  // namespace vit::model::kernels

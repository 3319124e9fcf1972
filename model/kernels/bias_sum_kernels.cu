// Kernels that write a gradient the backward pass needs anyway and, in the same pass, the column
// sums of it: the bias gradient of the Linear that produced the matching forward output. One
// skeleton (rows_with_column_sums) with an operation per kernel:
//   - GELU backward (exact, erf form): ATen's GeluBackward for bf16 (fp32 opmath, its constants
//     and formula), grad_x rounded to bf16 once; the sums take grad_x in fp32 before rounding.
//   - The attention heads gather: dq, dk, dv copied into the qkv projection's gradient layout
//     (values unchanged); the sums are those of the bf16 values.
//   - The token embedding's backward: the patch tokens' gradient rounded to bf16; the sums over
//     the images are those of the fp32 gradient (pos_embed's gradient). Its forward (cat + add)
//     is here too.
#include "model/kernels/bias_sum_kernels.h"

#include <cmath>

#include "model/kernels/bf16_bits.cuh"

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

// Reads 8 fp32 gradient values of one image; writes them as bf16 to the patch tokens' gradient
// unless they are the class token's (position 0: no output, its gradient is pos_embed's row 0).
struct TokensBackwardOp {
  TokensBackwardArgs a;
  __device__ __forceinline__ void operator()(int64_t row, int64_t col, float (&v)[kSumVector]) const {
    const int64_t positions = a.tokens * a.width;
    const float* src = a.grad + row * positions + col;
    const float4 lo = *reinterpret_cast<const float4*>(src), hi = *reinterpret_cast<const float4*>(src + 4);
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
    if (col < a.width) return;  // the class token (a group of 8 never straddles a token: width % 8 == 0)
    uint16_t* dst = a.grad_patches + row * (positions - a.width) + (col - a.width);
    *reinterpret_cast<uint4*>(dst) =
        make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
  }
};

// One thread per 8 consecutive outputs of out [B, N, D]: (float) patch or cls, plus pos, each sum
// rounded once as timm's fp32 add.
__global__ void __launch_bounds__(kSumThreads) tokens_forward(TokensForwardArgs a) {
  const int64_t positions = a.tokens * a.width;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * kSumThreads + threadIdx.x) * kSumVector;
  if (i >= a.batch * positions) return;
  const int64_t b = i / positions, p = i % positions;  // p: n * D + d, 8 columns of one token
  const float4 pos_lo = *reinterpret_cast<const float4*>(a.pos + p);
  const float4 pos_hi = *reinterpret_cast<const float4*>(a.pos + p + 4);
  float v[kSumVector];
  if (p < a.width) {
    const float4 lo = *reinterpret_cast<const float4*>(a.cls + p), hi = *reinterpret_cast<const float4*>(a.cls + p + 4);
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
  } else {
    const uint4 x = *reinterpret_cast<const uint4*>(a.patches + b * (positions - a.width) + (p - a.width));
    const uint32_t xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) v[2 * k] = low_bf16(xs[k]), v[2 * k + 1] = high_bf16(xs[k]);
  }
  float* dst = a.out + i;
  *reinterpret_cast<float4*>(dst) = make_float4(v[0] + pos_lo.x, v[1] + pos_lo.y, v[2] + pos_lo.z, v[3] + pos_lo.w);
  *reinterpret_cast<float4*>(dst + 4) = make_float4(v[4] + pos_hi.x, v[5] + pos_hi.y, v[6] + pos_hi.z, v[7] + pos_hi.w);
}

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

bool tokens_forward_supported(const TokensForwardArgs& a) {
  return a.tokens >= 2 && a.width % kSumVector == 0 && aligned(a.patches, 16) && aligned(a.cls, 16) &&
         aligned(a.pos, 16) && aligned(a.out, 16);
}

bool tokens_backward_supported(const TokensBackwardArgs& a) {
  return a.tokens >= 2 && a.width % kSumVector == 0 && aligned(a.grad, 16) && aligned(a.grad_patches, 16) &&
         aligned(a.pos_partial, 16);
}

cudaError_t launch_gelu_backward(const GeluBackwardArgs& a, int row_blocks, cudaStream_t stream) {
  if (!gelu_backward_supported(a)) return cudaErrorInvalidValue;
  return launch(GeluOp{a}, a.rows, a.cols, a.bias_partial, row_blocks, stream);
}

cudaError_t launch_heads_gather(const HeadsGatherArgs& a, int row_blocks, cudaStream_t stream) {
  if (!heads_gather_supported(a)) return cudaErrorInvalidValue;
  return launch(HeadsOp{a}, a.batch * a.tokens, 3 * a.heads * a.head_dim, a.bias_partial, row_blocks, stream);
}

cudaError_t launch_tokens_forward(const TokensForwardArgs& a, cudaStream_t stream) {
  if (!tokens_forward_supported(a)) return cudaErrorInvalidValue;
  const int64_t groups = a.batch * a.tokens * a.width / kSumVector;
  if (groups == 0) return cudaSuccess;
  if ((groups + kSumThreads - 1) / kSumThreads > 0x7fffffff) return cudaErrorInvalidValue;
  tokens_forward<<<static_cast<unsigned>((groups + kSumThreads - 1) / kSumThreads), kSumThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_tokens_backward(const TokensBackwardArgs& a, int row_blocks, cudaStream_t stream) {
  if (!tokens_backward_supported(a)) return cudaErrorInvalidValue;
  return launch(TokensBackwardOp{a}, a.batch, a.tokens * a.width, a.pos_partial, row_blocks, stream);
}

}  // namespace vit::model::kernels

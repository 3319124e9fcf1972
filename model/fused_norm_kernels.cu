// Residual add (+ per-sample drop-path scale) + LayerNorm + bf16 output in one pass, and its
// backward (LayerNorm gradient + the residual gradient + the bf16 branch gradient + per-block
// weight/bias partial sums) in one pass. One warp per row; lane l holds columns l, l + 32, ...
// so every load and store of a warp is one contiguous 128-byte (fp32) or 64-byte (bf16) line.
//
// Numerics: fp32 throughout, two-pass mean / variance over the row held in registers, output
// rounded to bf16 (round to nearest even) once, the same values ATen's add -> layer_norm -> cast
// chain produces under autocast up to fp32 summation order.
#include "model/fused_norm_kernels.h"

#include <cuda_bf16.h>

#include <atomic>

namespace vit::model::kernels {
namespace {

__device__ __forceinline__ float bf16_to_float(uint16_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(bits));
}

__device__ __forceinline__ uint16_t float_to_bf16(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

constexpr int kForwardWarps = 4;

// E: columns per lane (D <= 32 * E).
template <int E>
__global__ void __launch_bounds__(kForwardWarps * 32) norm_forward_kernel(NormForwardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kForwardWarps + (threadIdx.x >> 5);
  if (row >= a.rows) return;
  const int64_t D = a.width, off = row * D;
  const float scale = (a.branch != nullptr && a.sample_scale != nullptr) ? a.sample_scale[row / a.tokens] : 1.f;
  float v[E];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const int64_t c = lane + 32 * i;
    float x = 0.f;
    if (c < D) {
      x = a.residual[off + c];
      if (a.branch != nullptr) {
        x += bf16_to_float(a.branch[off + c]) * scale;
        a.residual_out[off + c] = x;
      }
    }
    v[i] = x;
    sum += x;
  }
  const float mean = warp_sum(sum) / static_cast<float>(D);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < D) {
      const float d = v[i] - mean;
      sq += d * d;
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(D) + a.eps);
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < D) a.normed[off + c] = float_to_bf16((v[i] - mean) * rstd * a.weight[c] + a.bias[c]);
  }
  if (lane == 0) {
    a.mean[row] = mean;
    a.rstd[row] = rstd;
  }
}

// Shared memory for the block reduction: 2 * warps * 32 * E floats <= 32 KB.
template <int E>
constexpr int kBackwardWarps = E > 16 ? 4 : 8;

template <int E>
__global__ void __launch_bounds__(kBackwardWarps<E> * 32) norm_backward_kernel(NormBackwardArgs a) {
  constexpr int kWarps = kBackwardWarps<E>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t D = a.width;
  const float inv_d = 1.f / static_cast<float>(D);
  float dw[E], db[E];
#pragma unroll
  for (int i = 0; i < E; ++i) dw[i] = db[i] = 0.f;

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < a.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = row * D;
    const float mean = a.mean[row], rstd = a.rstd[row];
    float xhat[E], g[E];
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const int64_t c = lane + 32 * i;
      xhat[i] = g[i] = 0.f;
      if (c < D) {
        const float dy = bf16_to_float(a.grad_normed[off + c]);
        xhat[i] = (a.x[off + c] - mean) * rstd;
        g[i] = dy * a.weight[c];
        s1 += g[i];
        s2 += g[i] * xhat[i];
        dw[i] += dy * xhat[i];
        db[i] += dy;
      }
    }
    s1 = warp_sum(s1) * inv_d;
    s2 = warp_sum(s2) * inv_d;
    const float scale =
        (a.grad_branch != nullptr && a.sample_scale != nullptr) ? a.sample_scale[row / a.tokens] : 1.f;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const int64_t c = lane + 32 * i;
      if (c < D) {
        float dx = rstd * (g[i] - s1 - xhat[i] * s2);
        if (a.grad_residual != nullptr) dx += a.grad_residual[off + c];
        a.grad_x[off + c] = dx;
        if (a.grad_branch != nullptr) a.grad_branch[off + c] = float_to_bf16(dx * scale);
      }
    }
  }

  // Column sums of the block's warps, then one partial row per block.
  __shared__ float shared[2][kWarps][32 * E];
#pragma unroll
  for (int i = 0; i < E; ++i) {
    shared[0][warp][32 * i + lane] = dw[i];
    shared[1][warp][32 * i + lane] = db[i];
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    float sw = 0.f, sb = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      sw += shared[0][w][c];
      sb += shared[1][w][c];
    }
    a.weight_partial[blockIdx.x * D + c] = sw;
    a.bias_partial[blockIdx.x * D + c] = sb;
  }
}

template <int E>
cudaError_t forward_with(const NormForwardArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.rows + kForwardWarps - 1) / kForwardWarps;
  norm_forward_kernel<E><<<static_cast<unsigned>(blocks), kForwardWarps * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

template <int E>
cudaError_t backward_with(const NormBackwardArgs& a, int blocks, cudaStream_t stream) {
  norm_backward_kernel<E><<<blocks, kBackwardWarps<E> * 32, 0, stream>>>(a);
  return cudaGetLastError();
}

// Calls f.template operator()<E>() with the smallest E that holds the width.
template <typename F>
cudaError_t dispatch_width(int64_t width, F&& f) {
  if (width <= 128) return f.template operator()<4>();
  if (width <= 256) return f.template operator()<8>();
  if (width <= 384) return f.template operator()<12>();
  if (width <= 512) return f.template operator()<16>();
  if (width <= 768) return f.template operator()<24>();
  if (width <= 1024) return f.template operator()<32>();
  return cudaErrorInvalidValue;
}

struct ForwardLaunch {
  const NormForwardArgs& a;
  cudaStream_t s;
  template <int E>
  cudaError_t operator()() const { return forward_with<E>(a, s); }
};

// One full wave: as many blocks as fit on the GPU at once (each loops over rows), no more than
// there are rows for. The wave size is asked of the driver once per (device, E).
constexpr int kCachedDevices = 64;
std::atomic<int> g_wave_cache[kCachedDevices][8];  // [device][E / 4 - 1], 0 = not yet known

struct BackwardBlocks {
  int64_t rows;
  int device;
  int* blocks;
  template <int E>
  cudaError_t operator()() const {
    std::atomic<int>* cached = device >= 0 && device < kCachedDevices ? &g_wave_cache[device][E / 4 - 1] : nullptr;
    int64_t wave = cached != nullptr ? cached->load(std::memory_order_relaxed) : 0;
    if (wave == 0) {
      int sms = 0, per_sm = 0;
      cudaError_t status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
      if (status != cudaSuccess) return status;
      status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, norm_backward_kernel<E>, kBackwardWarps<E> * 32, 0);
      if (status != cudaSuccess) return status;
      wave = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
      if (cached != nullptr) cached->store(static_cast<int>(wave), std::memory_order_relaxed);
    }
    const int64_t needed = (rows + kBackwardWarps<E> - 1) / kBackwardWarps<E>;
    *blocks = static_cast<int>(needed < wave ? (needed > 0 ? needed : 1) : wave);
    return cudaSuccess;
  }
};

struct BackwardLaunch {
  const NormBackwardArgs& a;
  int blocks;
  cudaStream_t s;
  template <int E>
  cudaError_t operator()() const { return backward_with<E>(a, blocks, s); }
};

}  // namespace

cudaError_t norm_backward_blocks(int64_t rows, int64_t width, int device, int* blocks) {
  return dispatch_width(width, BackwardBlocks{rows, device, blocks});
}

cudaError_t launch_norm_forward(const NormForwardArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  return dispatch_width(args.width, ForwardLaunch{args, stream});
}

cudaError_t launch_norm_backward(const NormBackwardArgs& args, int blocks, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  return dispatch_width(args.width, BackwardLaunch{args, blocks, stream});
}

}  // namespace vit::model::kernels

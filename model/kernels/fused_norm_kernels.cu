// Residual add (+ per-sample drop-path scale) + LayerNorm + bf16 output in one pass, and its
// backward (LayerNorm gradient + the residual gradient + the bf16 branch gradient + per-block
// weight/bias partial sums, and optionally those of the branch gradient: the bias gradient of the
// Linear that made the branch) in one pass. One warp per row, the row in registers; widths that are
// a multiple of 128 move 4 columns per lane per access (see column()), others one.
//
// Numerics: fp32 throughout, two-pass mean / variance over the row held in registers, output
// rounded to bf16 (round to nearest even) once, the same values ATen's add -> layer_norm -> cast
// chain produces under autocast up to fp32 summation order.
#include "model/kernels/fused_norm_kernels.h"

#include <atomic>

#include "model/kernels/bf16_bits.cuh"

namespace vit::model::kernels {
namespace {

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

constexpr int kForwardWarps = 4;

// Which columns a lane holds. Scalar layout (V = false): element i is column lane + 32 i, so a
// warp's access is one contiguous line per i. Vector layout (V = true, D a multiple of 128 and
// every pointer aligned): elements 4g..4g+3 are columns 128 g + 4 lane + 0..3, so a lane moves
// them with one 16-byte (fp32) or 8-byte (bf16) access: a quarter of the instructions.
template <bool V>
__device__ __forceinline__ int64_t column(int lane, int i) {
  return V ? (i >> 2) * 128 + lane * 4 + (i & 3) : lane + 32 * i;
}

template <int E, bool V>
__device__ __forceinline__ void load_f32(const float* __restrict__ p, int64_t D, int lane, float (&v)[E]) {
  if constexpr (V) {
#pragma unroll
    for (int g = 0; g < E / 4; ++g) {
      float4 q = make_float4(0.f, 0.f, 0.f, 0.f);
      if (g * 128 < D) q = *reinterpret_cast<const float4*>(p + g * 128 + lane * 4);
      v[4 * g] = q.x, v[4 * g + 1] = q.y, v[4 * g + 2] = q.z, v[4 * g + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = lane + 32 * i < D ? p[lane + 32 * i] : 0.f;
  }
}

template <int E, bool V>
__device__ __forceinline__ void load_bf16(const uint16_t* __restrict__ p, int64_t D, int lane, float (&v)[E]) {
  if constexpr (V) {
#pragma unroll
    for (int g = 0; g < E / 4; ++g) {
      uint2 q = make_uint2(0u, 0u);
      if (g * 128 < D) q = *reinterpret_cast<const uint2*>(p + g * 128 + lane * 4);
      v[4 * g] = low_bf16(q.x), v[4 * g + 1] = high_bf16(q.x);
      v[4 * g + 2] = low_bf16(q.y), v[4 * g + 3] = high_bf16(q.y);
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = lane + 32 * i < D ? bf16_to_float(p[lane + 32 * i]) : 0.f;
  }
}

template <int E, bool V>
__device__ __forceinline__ void store_f32(float* __restrict__ p, int64_t D, int lane, const float (&v)[E]) {
  if constexpr (V) {
#pragma unroll
    for (int g = 0; g < E / 4; ++g) {
      if (g * 128 < D) {
        *reinterpret_cast<float4*>(p + g * 128 + lane * 4) = make_float4(v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      if (lane + 32 * i < D) p[lane + 32 * i] = v[i];
    }
  }
}

template <int E, bool V>
__device__ __forceinline__ void store_bf16(uint16_t* __restrict__ p, int64_t D, int lane, const float (&v)[E]) {
  if constexpr (V) {
#pragma unroll
    for (int g = 0; g < E / 4; ++g) {
      if (g * 128 < D) {
        *reinterpret_cast<uint2*>(p + g * 128 + lane * 4) =
            make_uint2(pack_bf16(v[4 * g], v[4 * g + 1]), pack_bf16(v[4 * g + 2], v[4 * g + 3]));
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      if (lane + 32 * i < D) p[lane + 32 * i] = float_to_bf16(v[i]);
    }
  }
}

// E: columns per lane (D <= 32 * E).
template <int E, bool V>
__global__ void __launch_bounds__(kForwardWarps * 32) norm_forward_kernel(NormForwardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kForwardWarps + (threadIdx.x >> 5);
  if (row >= a.rows) return;
  const int64_t D = a.width, off = row * D;
  float v[E];
  load_f32<E, V>(a.residual + off, D, lane, v);
  if (a.branch != nullptr) {
    const float scale = a.sample_scale != nullptr ? a.sample_scale[row / a.tokens] : 1.f;
    float b[E];
    load_bf16<E, V>(a.branch + off, D, lane, b);
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] += b[i] * scale;  // padding stays 0
    store_f32<E, V>(a.residual_out + off, D, lane, v);
  }
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) sum += v[i];
  const float mean = warp_sum(sum) / static_cast<float>(D);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    const float d = column<V>(lane, i) < D ? v[i] - mean : 0.f;
    sq += d * d;
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(D) + a.eps);
  float w[E], b[E];
  load_f32<E, V>(a.weight, D, lane, w);
  load_f32<E, V>(a.bias, D, lane, b);
#pragma unroll
  for (int i = 0; i < E; ++i) v[i] = (v[i] - mean) * rstd * w[i] + b[i];
  store_bf16<E, V>(a.normed + off, D, lane, v);
  if (lane == 0) {
    a.mean[row] = mean;
    a.rstd[row] = rstd;
  }
}

// Shared memory for the block reduction: warps * 32 * E floats <= 16 KB, reused per sum.
template <int E>
constexpr int kBackwardWarps = E > 16 ? 4 : 8;

// Column sums over the block's warps of one per-lane accumulator, written as the block's partial
// row. Every thread of the block calls it.
template <int E, bool V>
__device__ __forceinline__ void block_column_sums(float (&shared)[kBackwardWarps<E>][32 * E], const float (&acc)[E],
                                                  int64_t D, float* __restrict__ out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's reads are done
#pragma unroll
  for (int i = 0; i < E; ++i) shared[warp][column<V>(lane, i)] = acc[i];  // column < 32 E in both layouts
  __syncthreads();
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kBackwardWarps<E>; ++w) sum += shared[w][c];
    out[blockIdx.x * D + c] = sum;
  }
}

// BB: also sum the branch gradient (fp32, before its bf16 rounding) per column.
template <int E, bool V, bool BB>
__global__ void __launch_bounds__(kBackwardWarps<E> * 32) norm_backward_kernel(NormBackwardArgs a) {
  constexpr int kWarps = kBackwardWarps<E>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t D = a.width;
  const float inv_d = 1.f / static_cast<float>(D);
  float dw[E], db[E], dbb[BB ? E : 1], weight[E];
#pragma unroll
  for (int i = 0; i < E; ++i) dw[i] = db[i] = 0.f;
#pragma unroll
  for (int i = 0; i < (BB ? E : 1); ++i) dbb[i] = 0.f;

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < a.rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t off = row * D;
    const float mean = a.mean[row], rstd = a.rstd[row];
    float dy[E], xhat[E], g[E];
    load_bf16<E, V>(a.grad_normed + off, D, lane, dy);
    load_f32<E, V>(a.x + off, D, lane, xhat);
    // Reloaded per row (an L1 hit): held across rows it would cost occupancy. Padding columns
    // load weight 0, so g = 0 there.
    load_f32<E, V>(a.weight, D, lane, weight);
    float s1 = 0.f, s2 = 0.f;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      xhat[i] = column<V>(lane, i) < D ? (xhat[i] - mean) * rstd : 0.f;
      g[i] = dy[i] * weight[i];
      s1 += g[i];
      s2 += g[i] * xhat[i];
      dw[i] += dy[i] * xhat[i];
      db[i] += dy[i];
    }
    s1 = warp_sum(s1) * inv_d;
    s2 = warp_sum(s2) * inv_d;
    float dx[E];
    if (a.grad_residual != nullptr) {
      load_f32<E, V>(a.grad_residual + off, D, lane, dx);
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) dx[i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < E; ++i) dx[i] += rstd * (g[i] - s1 - xhat[i] * s2);
    store_f32<E, V>(a.grad_x + off, D, lane, dx);
    if (a.grad_branch != nullptr) {
      const float scale = a.sample_scale != nullptr ? a.sample_scale[row / a.tokens] : 1.f;
#pragma unroll
      for (int i = 0; i < E; ++i) dx[i] *= scale;
      store_bf16<E, V>(a.grad_branch + off, D, lane, dx);
      if constexpr (BB) {
#pragma unroll
        for (int i = 0; i < E; ++i) dbb[i] += dx[i];  // padding columns are never read back
      }
    }
  }

  // Column sums of the block's warps, one partial row per block for each sum.
  __shared__ float shared[kWarps][32 * E];
  block_column_sums<E, V>(shared, dw, D, a.weight_partial);
  block_column_sums<E, V>(shared, db, D, a.bias_partial);
  if constexpr (BB) block_column_sums<E, V>(shared, dbb, D, a.branch_bias_partial);
}

// The vector layout needs whole 128-column groups and aligned rows.

bool vector_layout(const NormForwardArgs& a) {
  return a.width % 128 == 0 && aligned(a.residual, 16) && aligned(a.branch, 8) && aligned(a.weight, 16) &&
         aligned(a.bias, 16) && aligned(a.residual_out, 16) && aligned(a.normed, 8);
}

bool vector_layout(const NormBackwardArgs& a) {
  return a.width % 128 == 0 && aligned(a.grad_normed, 8) && aligned(a.grad_residual, 16) && aligned(a.x, 16) &&
         aligned(a.weight, 16) && aligned(a.grad_x, 16) && aligned(a.grad_branch, 8);
}

template <int E>
cudaError_t forward_with(const NormForwardArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.rows + kForwardWarps - 1) / kForwardWarps;
  if (vector_layout(a)) {
    norm_forward_kernel<E, true><<<static_cast<unsigned>(blocks), kForwardWarps * 32, 0, stream>>>(a);
  } else {
    norm_forward_kernel<E, false><<<static_cast<unsigned>(blocks), kForwardWarps * 32, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

bool branch_bias(const NormBackwardArgs& a) { return a.sum_branch && a.grad_branch != nullptr; }

// Calls f.template run<V, BB>() for the backward kernel variant `a` selects, so that the
// occupancy query and the launch always name the same kernel.
template <typename F>
cudaError_t with_backward_variant(const NormBackwardArgs& a, F&& f) {
  const bool bb = branch_bias(a);
  if (vector_layout(a)) return bb ? f.template run<true, true>() : f.template run<true, false>();
  return bb ? f.template run<false, true>() : f.template run<false, false>();
}

template <int E>
struct BackwardKernel {
  const NormBackwardArgs& a;
  int blocks;
  cudaStream_t stream;
  template <bool V, bool BB>
  cudaError_t run() const {
    norm_backward_kernel<E, V, BB><<<blocks, kBackwardWarps<E> * 32, 0, stream>>>(a);
    return cudaGetLastError();
  }
};

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
// there are rows for. The wave size is asked of the driver once per (device, E, layout, BB).
constexpr int kCachedDevices = 64;
std::atomic<int> g_wave_cache[kCachedDevices][8][2][2];  // [device][E / 4 - 1][vector][BB], 0 = not yet known

template <int E>
struct BackwardWave {
  int device;
  int64_t* wave;
  template <bool V, bool BB>
  cudaError_t run() const {
    std::atomic<int>* cached =
        device >= 0 && device < kCachedDevices ? &g_wave_cache[device][E / 4 - 1][V][BB] : nullptr;
    *wave = cached != nullptr ? cached->load(std::memory_order_relaxed) : 0;
    if (*wave != 0) return cudaSuccess;
    int sms = 0, per_sm = 0;
    cudaError_t status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (status != cudaSuccess) return status;
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, norm_backward_kernel<E, V, BB>,
                                                           kBackwardWarps<E> * 32, 0);
    if (status != cudaSuccess) return status;
    *wave = static_cast<int64_t>(sms) * (per_sm > 0 ? per_sm : 1);
    if (cached != nullptr) cached->store(static_cast<int>(*wave), std::memory_order_relaxed);
    return cudaSuccess;
  }
};

struct BackwardBlocks {
  const NormBackwardArgs& a;
  int device;
  int* blocks;
  template <int E>
  cudaError_t operator()() const {
    int64_t wave = 0;
    const cudaError_t status = with_backward_variant(a, BackwardWave<E>{device, &wave});
    if (status != cudaSuccess) return status;
    const int64_t needed = (a.rows + kBackwardWarps<E> - 1) / kBackwardWarps<E>;
    *blocks = static_cast<int>(needed < wave ? (needed > 0 ? needed : 1) : wave);
    return cudaSuccess;
  }
};

struct BackwardLaunch {
  const NormBackwardArgs& a;
  int blocks;
  cudaStream_t s;
  template <int E>
  cudaError_t operator()() const { return with_backward_variant(a, BackwardKernel<E>{a, blocks, s}); }
};

}  // namespace

cudaError_t norm_backward_blocks(const NormBackwardArgs& args, int device, int* blocks) {
  return dispatch_width(args.width, BackwardBlocks{args, device, blocks});
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

// Softmax attention for short sequences (attention_kernels.h): the CIFAR-10 recipe's 65 tokens of
// 16 dimensions, where ATen's flash and cuDNN kernels spend most of their time on 64 x 64 tiles
// padded from 65 tokens. One block takes one (image, head) pair whole: its q, k, v rows (padded
// with zeros to NP, a multiple of 16) in shared memory, one warp per 16 queries, every product
// on tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulation) with the scores and
// probabilities kept in the warp's registers, as FlashAttention-2 does:
//   forward  - S = Q K^T (fp32), row softmax in fp32 in log2 units (padded keys masked), P
//              rounded to bf16 for O = P V, O / rowsum; lse_i = log2 sum_j exp2(s_ij) (scores in
//              log2 units, s = scale * log2(e) * q . k) kept for the backward.
//   backward - P recomputed from lse, dP = dO V^T, dS = P (dP - D) with D_i = dO_i . o_i (the
//              flash backward's identity), dQ = scale dS K from the registers; P and dS (bf16)
//              through shared memory for the sums over queries, dK = scale dS^T Q, dV = P^T dO,
//              one warp per 16 keys. Padded rows and keys have P = 0, so dS = 0.
// Outputs and gradients are rounded to bf16 once.
#include "model/kernels/attention_kernels.h"

#include <cmath>

#include "model/kernels/bf16_bits.cuh"

namespace vit::model::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxPadded = 160;  // the longest padded sequence compiled (10 warps a block)

__host__ __device__ constexpr int padded(int64_t tokens) { return static_cast<int>((tokens + 15) / 16 * 16); }

// ---- Tensor-core fragments (PTX ISA, "Matrix fragments for mma.m16n8k16") ----
// A lane's place in a fragment: g = lane / 4 is its row (and row + 8), t2 = 2 (lane % 4) its
// first column; C tiles (16 x 8, fp32) hold (g, t2), (g, t2 + 1), (g + 8, t2), (g + 8, t2 + 1).

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8 x 8 bf16 matrices from shared memory, lane i naming row i % 8 of matrix i / 8; with
// `transposed` each matrix arrives transposed.
template <bool transposed>
__device__ __forceinline__ void load_matrices(uint32_t (&r)[4], const uint16_t* row) {
  if constexpr (transposed) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
  }
}

// c += a b for a 16 x 16 A and a 16 x 8 B (b0, b1).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// out[n] and out[n + 1] += a b for the two 8-column tiles of b (b_rows, b_columns).
template <int T>
__device__ __forceinline__ void mma_pair(float (&out)[T][4], int n, const uint32_t (&a)[4], const uint32_t (&b)[4]) {
  mma(out[n], a, b[0], b[1]);
  mma(out[n + 1], a, b[2], b[3]);
}

// The A fragment of the 16 x 16 block of M (row-major, `ld` elements a row) at (r0, c0).
__device__ __forceinline__ void a_block(uint32_t (&a)[4], const uint16_t* m, int ld, int r0, int c0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  load_matrices<false>(a, m + (r0 + (lane & 7) + (i & 1) * 8) * ld + c0 + (i >> 1) * 8);
}

// The A fragment of the transpose of M's 16 x 16 block at (r0, c0): A[i][k] = M[r0 + k][c0 + i].
__device__ __forceinline__ void a_block_transposed(uint32_t (&a)[4], const uint16_t* m, int ld, int r0, int c0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  load_matrices<true>(a, m + (r0 + (lane & 7) + (i >> 1) * 8) * ld + c0 + (i & 1) * 8);
}

// B fragments of two 8-column tiles (b[0], b[1]: columns n0..n0 + 7; b[2], b[3]: the next 8)
// over k0..k0 + 15, for B[k][n] = M[n][k]: M's rows are B's columns (K for Q K^T).
__device__ __forceinline__ void b_rows(uint32_t (&b)[4], const uint16_t* m, int ld, int n0, int k0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  load_matrices<false>(b, m + (n0 + (lane & 7) + (i >> 1) * 8) * ld + k0 + (i & 1) * 8);
}

// The same for B[k][n] = M[k][n]: M's rows are B's rows (V for P V).
__device__ __forceinline__ void b_columns(uint32_t (&b)[4], const uint16_t* m, int ld, int k0, int n0) {
  const int lane = threadIdx.x & 31, i = lane >> 3;
  load_matrices<true>(b, m + (k0 + (lane & 7) + (i & 1) * 8) * ld + n0 + (i >> 1) * 8);
}

// Columns 16c..16c + 15 of a row of C tiles as an A fragment (FlashAttention-2's reuse of the
// accumulator layout), rounded to bf16.
__device__ __forceinline__ void c_as_a(uint32_t (&a)[4], const float (&left)[4], const float (&right)[4]) {
  a[0] = pack_bf16(left[0], left[1]);
  a[1] = pack_bf16(left[2], left[3]);
  a[2] = pack_bf16(right[0], right[1]);
  a[3] = pack_bf16(right[2], right[3]);
}

// ---- Rows in and out ----

// Rows [0, np) of one (image, head) pair into shared memory, `ld` elements apart, zeros from row
// `rows` on; row r of the pair starts at src + r * stride.
template <int Dh>
__device__ void load_rows(uint16_t* dst, int ld, const uint16_t* src, int64_t stride, int rows, int np) {
  constexpr int kChunks = Dh / 8;
  for (int idx = threadIdx.x; idx < np * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = idx % kChunks * 8;
    const uint4 v = r < rows ? *reinterpret_cast<const uint4*>(src + r * stride + c) : make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = v;
  }
}

// A warp's 16 rows of C tiles (Dh / 8 of them) times mul[h] (h: row g or g + 8) as bf16, to
// rows r0.. of a pair whose row r starts at dst + r * stride; rows from `rows` on left out.
template <int Dh>
__device__ void store_rows(uint16_t* dst, int64_t stride, const float (&c)[Dh / 8][4], int r0, int rows,
                           const float (&mul)[2]) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + g + 8 * h;
    if (r >= rows) continue;
#pragma unroll
    for (int t = 0; t < Dh / 8; ++t) {
      *reinterpret_cast<uint32_t*>(dst + r * stride + t * 8 + t2) =
          pack_bf16(c[t][2 * h] * mul[h], c[t][2 * h + 1] * mul[h]);
    }
  }
}

// A warp's 16 rows of NT C tiles into shared memory (rows r0.., `ld` elements apart) as bf16.
template <int NT>
__device__ void stash_rows(uint16_t* dst, int ld, const float (&c)[NT][4], int r0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    *reinterpret_cast<uint32_t*>(dst + (r0 + g) * ld + t * 8 + t2) = pack_bf16(c[t][0], c[t][1]);
    *reinterpret_cast<uint32_t*>(dst + (r0 + g + 8) * ld + t * 8 + t2) = pack_bf16(c[t][2], c[t][3]);
  }
}

// S = Q K^T for the warp's 16 queries from row r0 of qs: NP / 8 tiles of 8 keys.
template <int Dh, int NP>
__device__ void scores(float (&s)[NP / 8][4], const uint16_t* qs, const uint16_t* ks, int ld, int r0) {
  uint32_t q[Dh / 16][4];
#pragma unroll
  for (int k = 0; k < Dh / 16; ++k) a_block(q[k], qs, ld, r0, k * 16);
#pragma unroll
  for (int t = 0; t < NP / 8; ++t) s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
#pragma unroll
  for (int j = 0; j < NP / 16; ++j) {
#pragma unroll
    for (int k = 0; k < Dh / 16; ++k) {
      uint32_t b[4];
      b_rows(b, ks, ld, j * 16, k * 16);
      mma_pair(s, 2 * j, q[k], b);
    }
  }
}

// out (Dh / 8 C tiles) = A V summed over the NP / 16 key blocks, A's block j from c_as_a of
// tiles 2j and 2j + 1 of `a`.
template <int Dh, int NP>
__device__ void times_rows(float (&out)[Dh / 8][4], const float (&a)[NP / 8][4], const uint16_t* v, int ld) {
#pragma unroll
  for (int t = 0; t < Dh / 8; ++t) out[t][0] = out[t][1] = out[t][2] = out[t][3] = 0.f;
#pragma unroll
  for (int j = 0; j < NP / 16; ++j) {
    uint32_t frag[4];
    c_as_a(frag, a[2 * j], a[2 * j + 1]);
#pragma unroll
    for (int d = 0; d < Dh / 16; ++d) {
      uint32_t b[4];
      b_columns(b, v, ld, j * 16, d * 16);
      mma_pair(out, 2 * d, frag, b);
    }
  }
}

// The pair of this block: its image and head, and where its rows start in [B, N, parts, H, Dh].
struct Pair {
  int64_t image, head;
  __device__ Pair(int64_t heads) : image(blockIdx.x / heads), head(blockIdx.x % heads) {}
  __device__ int64_t start(int64_t tokens, int64_t heads, int parts, int part, int Dh) const {
    return ((image * tokens * parts + part) * heads + head) * Dh;
  }
};

template <int Dh, int NP>
__global__ void __launch_bounds__(NP * 2) attention_forward_kernel(AttentionForwardArgs a) {
  constexpr int kLd = Dh + 8;  // 16-byte rows, conflict-free for ldmatrix
  __shared__ __align__(16) uint16_t qs[NP * kLd], ks[NP * kLd], vs[NP * kLd];
  const int n = static_cast<int>(a.tokens);
  const Pair pair(a.heads);
  const int64_t stride = 3 * a.heads * Dh;
  load_rows<Dh>(qs, kLd, a.qkv + pair.start(n, a.heads, 3, 0, Dh), stride, n, NP);
  load_rows<Dh>(ks, kLd, a.qkv + pair.start(n, a.heads, 3, 1, Dh), stride, n, NP);
  load_rows<Dh>(vs, kLd, a.qkv + pair.start(n, a.heads, 3, 2, Dh), stride, n, NP);
  __syncthreads();
  const int lane = threadIdx.x & 31, r0 = (threadIdx.x >> 5) * 16, g = lane >> 2, t2 = (lane & 3) * 2;
  float s[NP / 8][4];
  scores<Dh, NP>(s, qs, ks, kLd, r0);
  // Row softmax in log2 units: each row's 8-key tiles are spread over the 4 lanes of a quad.
  const float to_log2 = a.scale * kLog2e;
  float row_max[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};
#pragma unroll
  for (int t = 0; t < NP / 8; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[t][i] = t * 8 + t2 + (i & 1) < n ? s[t][i] * to_log2 : -INFINITY;
      row_max[i >> 1] = fmaxf(row_max[i >> 1], s[t][i]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xffffffffu, row_max[h], 1));
    row_max[h] = fmaxf(row_max[h], __shfl_xor_sync(0xffffffffu, row_max[h], 2));
  }
#pragma unroll
  for (int t = 0; t < NP / 8; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[t][i] = exp2f(s[t][i] - row_max[i >> 1]);
      sum[i >> 1] += s[t][i];
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 1);
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 2);
  }
  float o[Dh / 8][4];
  times_rows<Dh, NP>(o, s, vs, kLd);
  const float inverse[2] = {1.f / sum[0], 1.f / sum[1]};
  store_rows<Dh>(a.out + pair.start(n, a.heads, 1, 0, Dh), a.heads * Dh, o, r0, n, inverse);
  if ((lane & 3) == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = r0 + g + 8 * h;
      if (r < n) a.lse[static_cast<int64_t>(blockIdx.x) * n + r] = row_max[h] + log2f(sum[h]);
    }
  }
}

// Shared memory of a backward block: q, k, v, dO rows, P and dS (bf16), lse and D (fp32).
constexpr int64_t backward_bytes(int np, int dh) {
  return 4 * np * (dh + 8) * 2 + 2 * np * (np + 8) * 2 + 2 * np * 4;
}

template <int Dh, int NP>
__global__ void __launch_bounds__(NP * 2) attention_backward_kernel(AttentionBackwardArgs a) {
  constexpr int kLd = Dh + 8, kLdP = NP + 8;  // 16-byte rows, conflict-free for ldmatrix
  extern __shared__ uint4 shared[];
  uint16_t* qs = reinterpret_cast<uint16_t*>(shared);
  uint16_t* ks = qs + NP * kLd;
  uint16_t* vs = ks + NP * kLd;
  uint16_t* dos = vs + NP * kLd;
  uint16_t* ps = dos + NP * kLd;
  uint16_t* dss = ps + NP * kLdP;
  float* lses = reinterpret_cast<float*>(dss + NP * kLdP);
  float* deltas = lses + NP;
  const int n = static_cast<int>(a.tokens);
  const Pair pair(a.heads);
  const int64_t stride = 3 * a.heads * Dh, out_stride = a.heads * Dh;
  const int64_t out_start = pair.start(n, a.heads, 1, 0, Dh);
  load_rows<Dh>(qs, kLd, a.qkv + pair.start(n, a.heads, 3, 0, Dh), stride, n, NP);
  load_rows<Dh>(ks, kLd, a.qkv + pair.start(n, a.heads, 3, 1, Dh), stride, n, NP);
  load_rows<Dh>(vs, kLd, a.qkv + pair.start(n, a.heads, 3, 2, Dh), stride, n, NP);
  load_rows<Dh>(dos, kLd, a.grad_out + out_start, out_stride, n, NP);
  for (int i = threadIdx.x; i < NP; i += blockDim.x) {
    float delta = 0.f;
    if (i < n) {
      const uint16_t* o = a.out + out_start + i * out_stride;
      const uint16_t* d_o = a.grad_out + out_start + i * out_stride;
#pragma unroll
      for (int d = 0; d < Dh; ++d) delta = fmaf(bf16_to_float(o[d]), bf16_to_float(d_o[d]), delta);
    }
    deltas[i] = delta;
    lses[i] = i < n ? a.lse[static_cast<int64_t>(blockIdx.x) * n + i] : INFINITY;  // padded rows: P = 0
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, r0 = (threadIdx.x >> 5) * 16, g = lane >> 2, t2 = (lane & 3) * 2;
  // P from the forward's lse, into shared memory for dV.
  float s[NP / 8][4];
  scores<Dh, NP>(s, qs, ks, kLd, r0);
  const float to_log2 = a.scale * kLog2e;
  const float lse[2] = {lses[r0 + g], lses[r0 + g + 8]}, delta[2] = {deltas[r0 + g], deltas[r0 + g + 8]};
#pragma unroll
  for (int t = 0; t < NP / 8; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[t][i] = t * 8 + t2 + (i & 1) < n ? exp2f(fmaf(s[t][i], to_log2, -lse[i >> 1])) : 0.f;
    }
  }
  stash_rows<NP / 8>(ps, kLdP, s, r0);
  // dP = dO V^T, tile by tile, and dS = P (dP - D) in place of P.
  uint32_t d_o[Dh / 16][4];
#pragma unroll
  for (int k = 0; k < Dh / 16; ++k) a_block(d_o[k], dos, kLd, r0, k * 16);
#pragma unroll
  for (int j = 0; j < NP / 16; ++j) {
    float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int k = 0; k < Dh / 16; ++k) {
      uint32_t b[4];
      b_rows(b, vs, kLd, j * 16, k * 16);
      mma_pair(dp, 0, d_o[k], b);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[2 * j][i] *= dp[0][i] - delta[i >> 1];
      s[2 * j + 1][i] *= dp[1][i] - delta[i >> 1];
    }
  }
  stash_rows<NP / 8>(dss, kLdP, s, r0);
  // dQ = scale dS K: the warp's own query rows.
  float grad[Dh / 8][4];
  times_rows<Dh, NP>(grad, s, ks, kLd);
  const float scaled[2] = {a.scale, a.scale}, unscaled[2] = {1.f, 1.f};
  store_rows<Dh>(a.grad_qkv + pair.start(n, a.heads, 3, 0, Dh), stride, grad, r0, n, scaled);
  __syncthreads();  // every warp's rows of P and dS
  // dK = scale dS^T Q and dV = P^T dO for the keys r0..r0 + 15: sums over the query blocks.
  float dk[Dh / 8][4], dv[Dh / 8][4];
#pragma unroll
  for (int t = 0; t < Dh / 8; ++t) {
#pragma unroll
    for (int i = 0; i < 4; ++i) dk[t][i] = dv[t][i] = 0.f;
  }
#pragma unroll
  for (int j = 0; j < NP / 16; ++j) {
    uint32_t pt[4], dst[4];
    a_block_transposed(pt, ps, kLdP, j * 16, r0);
    a_block_transposed(dst, dss, kLdP, j * 16, r0);
#pragma unroll
    for (int d = 0; d < Dh / 16; ++d) {
      uint32_t b[4];
      b_columns(b, dos, kLd, j * 16, d * 16);
      mma_pair(dv, 2 * d, pt, b);
      b_columns(b, qs, kLd, j * 16, d * 16);
      mma_pair(dk, 2 * d, dst, b);
    }
  }
  store_rows<Dh>(a.grad_qkv + pair.start(n, a.heads, 3, 1, Dh), stride, dk, r0, n, scaled);
  store_rows<Dh>(a.grad_qkv + pair.start(n, a.heads, 3, 2, Dh), stride, dv, r0, n, unscaled);
}

// Lets the backward kernel take more than 48 KiB of dynamic shared memory; once per kernel, at
// its first launch (the trainer's eager warm-up, before any CUDA-graph capture).
template <typename Kernel>
cudaError_t allow_shared_memory(Kernel kernel, int64_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

template <int Dh, int NP>
cudaError_t launch(const AttentionForwardArgs* forward, const AttentionBackwardArgs* backward, cudaStream_t stream) {
  const int64_t pairs = forward ? forward->batch * forward->heads : backward->batch * backward->heads;
  if (pairs == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(pairs);
  if (forward) {
    attention_forward_kernel<Dh, NP><<<blocks, NP * 2, 0, stream>>>(*forward);
  } else {
    constexpr int64_t bytes = backward_bytes(NP, Dh);
    static const cudaError_t allowed = allow_shared_memory(attention_backward_kernel<Dh, NP>, bytes);
    if (allowed != cudaSuccess) return allowed;
    attention_backward_kernel<Dh, NP><<<blocks, NP * 2, bytes, stream>>>(*backward);
  }
  return cudaGetLastError();
}

template <int Dh>
cudaError_t launch_padded(int np, const AttentionForwardArgs* forward, const AttentionBackwardArgs* backward,
                          cudaStream_t stream) {
  switch (np) {
    case 16: return launch<Dh, 16>(forward, backward, stream);
    case 32: return launch<Dh, 32>(forward, backward, stream);
    case 48: return launch<Dh, 48>(forward, backward, stream);
    case 64: return launch<Dh, 64>(forward, backward, stream);
    case 80: return launch<Dh, 80>(forward, backward, stream);
    case 96: return launch<Dh, 96>(forward, backward, stream);
    case 112: return launch<Dh, 112>(forward, backward, stream);
    case 128: return launch<Dh, 128>(forward, backward, stream);
    case 144: return launch<Dh, 144>(forward, backward, stream);
    case 160: return launch<Dh, 160>(forward, backward, stream);
    default: return cudaErrorInvalidValue;
  }
}
static_assert(kMaxPadded == 160, "launch_padded names every padded length up to kMaxPadded");

cudaError_t dispatch(int64_t tokens, int64_t head_dim, const AttentionForwardArgs* forward,
                     const AttentionBackwardArgs* backward, cudaStream_t stream) {
  if (!attention_shape_supported(tokens, head_dim)) return cudaErrorInvalidValue;
  const int np = padded(tokens);
  return head_dim == 16 ? launch_padded<16>(np, forward, backward, stream)
                        : launch_padded<32>(np, forward, backward, stream);
}

}  // namespace

int64_t attention_shared_bytes(int64_t tokens, int64_t head_dim) {
  return backward_bytes(padded(tokens), static_cast<int>(head_dim));
}

bool attention_shape_supported(int64_t tokens, int64_t head_dim) {
  return tokens > 0 && tokens <= kMaxPadded && (head_dim == 16 || head_dim == 32);
}

bool attention_forward_supported(const AttentionForwardArgs& a) {
  return attention_shape_supported(a.tokens, a.head_dim) && aligned(a.qkv, 16) && aligned(a.out, 16) &&
         aligned(a.lse, 4);
}

bool attention_backward_supported(const AttentionBackwardArgs& a) {
  return attention_shape_supported(a.tokens, a.head_dim) && aligned(a.qkv, 16) && aligned(a.out, 16) &&
         aligned(a.lse, 4) && aligned(a.grad_out, 16) && aligned(a.grad_qkv, 16);
}

cudaError_t launch_attention_forward(const AttentionForwardArgs& args, cudaStream_t stream) {
  return dispatch(args.tokens, args.head_dim, &args, nullptr, stream);
}

cudaError_t launch_attention_backward(const AttentionBackwardArgs& args, cudaStream_t stream) {
  return dispatch(args.tokens, args.head_dim, nullptr, &args, stream);
}

}  // namespace vit::model::kernels

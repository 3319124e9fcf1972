// Raw CUDA launchers behind fused_attention.h (no LibTorch types: nvcc compiles the .cu file
// without the heavy headers). Softmax attention over short sequences, read straight from the qkv
// projection's output and written straight in the output projection's input layout: one block
// per (image, head) pair, one warp per 16 queries, products on tensor cores with the scores in
// registers (attention_kernels.cu says how).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace vit::model::kernels {

// Sequences and heads the kernels take: up to 160 tokens, heads of 16 or 32. The backward block
// needs attention_shared_bytes of shared memory (about 4 x tokens^2 bytes, 156 KiB at most); the
// caller checks the device offers that much.
int64_t attention_shared_bytes(int64_t tokens, int64_t head_dim);

struct AttentionForwardArgs {
  const uint16_t* qkv;  // [B, N, 3, H, Dh] bf16 bits (q, k, v of each token; timm's qkv layout)
  uint16_t* out;        // [B, N, H * Dh] bf16 bits: softmax(q k^T * scale) v, heads side by side
  float* lse;           // [B * H, N]: log2 of each query's softmax denominator (scores in log2 units)
  int64_t batch, tokens, heads, head_dim;
  float scale;  // applied to q k^T (1 / sqrt(Dh) for timm's attention)
};

struct AttentionBackwardArgs {
  const uint16_t* qkv;       // as in the forward
  const uint16_t* out;       // the forward's output
  const float* lse;          // the forward's lse
  const uint16_t* grad_out;  // [B, N, H * Dh] bf16 bits
  uint16_t* grad_qkv;        // [B, N, 3, H, Dh] bf16 bits: dq, dk, dv in qkv's layout
  int64_t batch, tokens, heads, head_dim;
  float scale;
};

// True when the shape is one the kernels take and the pointers are 16-byte aligned.
bool attention_shape_supported(int64_t tokens, int64_t head_dim);
bool attention_forward_supported(const AttentionForwardArgs& args);
bool attention_backward_supported(const AttentionBackwardArgs& args);

cudaError_t launch_attention_forward(const AttentionForwardArgs& args, cudaStream_t stream);
cudaError_t launch_attention_backward(const AttentionBackwardArgs& args, cudaStream_t stream);

}  // namespace vit::model::kernels

// Raw CUDA launchers behind fused_bias_sums.h (no LibTorch types: nvcc compiles the .cu file
// without the heavy headers). Each backward kernel writes a row-major [rows, cols] bf16 gradient
// (cols a multiple of 8, 16-byte aligned) and the per-block column sums of a gradient in fp32:
// the bias gradient of the Linear whose output that gradient belongs to, or for the token
// embedding the position embedding's gradient.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace vit::model::kernels {

constexpr int64_t kSumVector = 8;      // bf16 columns per thread (one 16-byte access)
constexpr int64_t kSumThreads = 128;   // threads per block
constexpr int64_t kSumBlockColumns = kSumVector * kSumThreads;

// Grid of every backward launcher: ceil(cols / kSumBlockColumns) x row_blocks; block b of a column strip
// takes rows [b * chunk, (b + 1) * chunk), chunk = ceil(rows / row_blocks), and writes row b of
// bias_partial [row_blocks, cols].

struct GeluBackwardArgs {
  const uint16_t* x;       // [rows, cols] bf16 bits: the GELU input (the Linear's output, bias included)
  const uint16_t* grad_y;  // [rows, cols] bf16 bits: the gradient of the GELU output
  uint16_t* grad_x;        // [rows, cols] bf16 bits: grad_y * GELU'(x)
  float* bias_partial;     // [row_blocks, cols]: column sums of grad_x in fp32 (before rounding)
  int64_t rows, cols;
};

// The attention's q, k, v gradients, each [B, H, N, Dh] with the last stride 1, the others
// multiples of 8, and 16-byte aligned (heads_gather_supported; callers copy otherwise), gathered into the qkv projection's gradient [B * N, 3 * H * Dh] (its [B, N, 3, H, Dh] layout).
struct HeadsGatherArgs {
  const uint16_t* grad[3];  // dq, dk, dv: bf16 bits
  int64_t stride[3][3];     // per tensor: strides of B, H, N in elements
  uint16_t* grad_qkv;       // [B * N, 3 * H * Dh] bf16 bits
  float* bias_partial;      // [row_blocks, 3 * H * Dh]: column sums of grad_qkv in fp32
  int64_t batch, heads, tokens, head_dim;
};

// The token embedding: out [B, N, D] fp32 = cat(cls, patch tokens) + pos, with cls and pos fp32
// and the patch embedding's output bf16 (timm's cat and add under autocast, in one pass).
struct TokensForwardArgs {
  const uint16_t* patches;  // [B, N - 1, D] bf16 bits
  const float* cls;         // [D]
  const float* pos;         // [N, D]
  float* out;               // [B, N, D]
  int64_t batch, tokens, width;
};

// Its backward: the patch tokens' gradient rounded to bf16 (the patch embedding's output
// gradient) and, in the same pass, the sums over the batch of the fp32 gradient: pos_embed's
// gradient, whose row 0 is also cls_token's. "Rows" are images, "columns" the N * D positions.
struct TokensBackwardArgs {
  const float* grad;       // [B, N, D]
  uint16_t* grad_patches;  // [B, N - 1, D] bf16 bits
  float* pos_partial;      // [row_blocks, N * D]: sums over each block's images
  int64_t batch, tokens, width;
};

// True when the pointers, strides and widths suit the kernels' 16-byte accesses (a null output
// pointer passes: the callers allocate outputs, always aligned, once the inputs qualify).
bool gelu_backward_supported(const GeluBackwardArgs& args);
bool heads_gather_supported(const HeadsGatherArgs& args);
bool tokens_forward_supported(const TokensForwardArgs& args);
bool tokens_backward_supported(const TokensBackwardArgs& args);

cudaError_t launch_gelu_backward(const GeluBackwardArgs& args, int row_blocks, cudaStream_t stream);
cudaError_t launch_heads_gather(const HeadsGatherArgs& args, int row_blocks, cudaStream_t stream);
cudaError_t launch_tokens_forward(const TokensForwardArgs& args, cudaStream_t stream);
cudaError_t launch_tokens_backward(const TokensBackwardArgs& args, int row_blocks, cudaStream_t stream);

}  // namespace vit::model::kernels

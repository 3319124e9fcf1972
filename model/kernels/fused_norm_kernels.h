// Raw CUDA launchers behind fused_norm.h (no LibTorch types: the .cu file is compiled by nvcc
// without the heavy headers). Row-major [rows, D] tensors, one warp per row, D <= kMaxFusedWidth.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace vit::model::kernels {

constexpr int64_t kMaxFusedWidth = 1024;

struct NormForwardArgs {
  const float* residual;        // [rows, D] fp32
  const uint16_t* branch;       // [rows, D] bf16 bits, or null (plain LayerNorm of residual)
  const float* sample_scale;    // [rows / tokens] per-sample factor on the branch (drop path), or null
  const float* weight;          // [D]
  const float* bias;            // [D]
  float* residual_out;          // [rows, D] residual + scale * branch; null when branch is null
  uint16_t* normed;             // [rows, D] bf16 bits: LayerNorm(residual_out)
  float* mean;                  // [rows]
  float* rstd;                  // [rows]
  int64_t rows, width, tokens;  // tokens: rows per sample (for sample_scale)
  float eps;
};

struct NormBackwardArgs {
  const uint16_t* grad_normed;  // [rows, D] bf16 bits
  const float* grad_residual;   // [rows, D] fp32 gradient of residual_out from later layers, or null
  const float* x;               // [rows, D] the normalised input (residual_out, or residual without branch)
  const float* mean;            // [rows]
  const float* rstd;            // [rows]
  const float* weight;          // [D]
  const float* sample_scale;    // as in the forward, or null
  float* grad_x;                // [rows, D] fp32
  uint16_t* grad_branch;        // [rows, D] bf16 bits (grad_x * scale), or null
  float* weight_partial;        // [blocks, D] per-block sums of grad_normed * xhat
  float* bias_partial;          // [blocks, D] per-block sums of grad_normed
  float* branch_bias_partial;   // [blocks, D] per-block sums of the fp32 branch gradient (the bias
                                // gradient of the Linear that made the branch) when sum_branch
  int64_t rows, width, tokens;
  bool sum_branch;              // fill branch_bias_partial (needs grad_branch)
};

// Number of blocks the backward launches for `args` (rows of the partial-sum arrays,
// which may still be null here): one full wave of the kernel variant `args` selects.
cudaError_t norm_backward_blocks(const NormBackwardArgs& args, int device, int* blocks);

cudaError_t launch_norm_forward(const NormForwardArgs& args, cudaStream_t stream);
cudaError_t launch_norm_backward(const NormBackwardArgs& args, int blocks, cudaStream_t stream);

}  // namespace vit::model::kernels

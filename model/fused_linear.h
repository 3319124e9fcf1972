// Linear layers under bf16 autocast on a GPU whose backward computes the weight gradient and the
// bias gradient in one cuBLASLt GEMM (the BGRADB epilogue), in fp32.
//
// Autocast's linear (at::linear on bf16 copies of x, weight and bias) computes in backward
// grad_x = grad_y W and grad_W = grad_y^T x as bf16 GEMMs, then the bias gradient as a separate
// column sum of grad_y (ATen's reduction: about a quarter of memory bandwidth, ~5-10% of a ViT
// step over its 4 x depth linears), then casts grad_W and grad_b back to the fp32 parameters.
// Here the column sum happens inside the weight-gradient GEMM, which reads grad_y anyway, and
// both gradients come out of the GEMM in fp32 (fp32 accumulation as before, but not rounded to
// bf16 on the way: the same or better than autocast's values). The forward pass and grad_x are
// autocast's own.
#pragma once

#include <torch/torch.h>

namespace vit::model {

// True when the fused backward is compiled in (a CUDA build) and applies: x on a GPU under bf16
// autocast with gradients recorded.
bool fused_linear_applies(const torch::Tensor& x);

// y = x W^T + b as autocast computes it (bf16 out); x: [..., in], weight [out, in] and bias [out]
// fp32 parameters. Call only where fused_linear_applies(x).
torch::Tensor fused_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace vit::model

// GELU after a Linear under bf16 autocast on a GPU, with the Linear's bias gradient summed by the
// GELU backward kernel (fused_gelu_kernels.cu) in the pass that writes the GELU input gradient.
//
// Autocast's MLP runs GELU backward (one pass over [rows, mlp_dim]) and then the Linear's backward
// reads that gradient again for the bias column sums. Here the GELU backward kernel keeps
// per-block column sums as it goes, so the Linear (fused_linear(..., bias_grad=false)) computes
// only its weight gradient. The forward is ATen's gelu, the input gradient ATen's formula in fp32
// rounded to bf16 once; the bias gradient sums those fp32 values (autocast sums the bf16-rounded
// ones).
#pragma once

#include <torch/torch.h>

namespace vit::model {

// True when the kernel is compiled in and takes a GELU over `width` columns (a multiple of 8).
bool fused_gelu_supported(int64_t width);

// gelu(x) (exact, erf form) for x [..., width] bf16 on a GPU, x = Linear(...) with bias `bias`
// (fp32 [width]) already added; backward returns x's gradient and the bias gradient. The Linear
// must leave its bias gradient out (fused_linear(..., bias_grad=false)).
torch::Tensor fused_gelu(const torch::Tensor& x, const torch::Tensor& bias);

}  // namespace vit::model

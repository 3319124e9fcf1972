// Fused residual add + drop path + LayerNorm + bf16 cast for the pre-norm blocks under bf16
// autocast on a GPU.
//
// Eager autocast runs, per LayerNorm site: the residual add (fp32 + bf16 -> fp32), the drop-path
// multiply, layer_norm in fp32 and the cast of its output to bf16 for the next Linear; and in
// backward the cast back, the LayerNorm gradient, the residual gradient sum and the cast of the
// branch gradient to bf16. Each is a full pass over [B, N, D]. These two functions do the same
// arithmetic in one pass each way (kernels in fused_norm_kernels.cu); the residual stream stays
// fp32 as under autocast, the LayerNorm output is the same bf16 values. One difference, with drop
// path only: the per-sample factor 1/keep is applied in fp32, where the unfused path (and timm
// under autocast) rounds the mask and the scaled branch to bf16 (1/0.9 -> 1.109375).
#pragma once

#include <torch/torch.h>

#include <utility>

namespace vit::model {

// True when the kernels are compiled in and can take x: a CUDA fp32 tensor [..., D], D <= 1024.
bool fused_norm_supported(const torch::Tensor& x);

// LayerNorm(x) as bf16. x: [..., D] fp32.
torch::Tensor fused_layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm);

// s = residual + sample_scale[b] * branch and LayerNorm(s) as bf16; returns {s (fp32), normed}.
// residual: [B, N, D] fp32; branch: [B, N, D] bf16; sample_scale: [B] fp32 (drop path: 0 or
// 1/keep per sample) or undefined (1).
// branch_bias (optional, fp32 [D]): the bias the Linear that made `branch` added. Its gradient,
// the column sums of the branch gradient in fp32, then comes from this backward pass (the kernel
// that writes the branch gradient sums it), so that Linear must not compute it too
// (fused_linear(..., bias_grad=false)) and nothing may sit between the two (no active dropout).
std::pair<torch::Tensor, torch::Tensor> fused_add_layer_norm(const torch::Tensor& residual,
                                                             const torch::Tensor& branch,
                                                             const torch::Tensor& sample_scale,
                                                             const torch::nn::LayerNorm& norm,
                                                             const torch::Tensor& branch_bias = {});

}  // namespace vit::model

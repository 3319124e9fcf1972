// Linear layers under bf16 autocast on a GPU whose backward computes the weight gradient in fp32
// with cuBLASLt, and the bias gradient in fp32 either in the same call (the BGRADB epilogue) or,
// with bias_grad = false, in the kernel that consumes the output's gradient anyway.
//
// Autocast's linear (at::linear on bf16 copies of x, weight and bias) computes in backward
// grad_x = grad_y W and grad_W = grad_y^T x as bf16 GEMMs, the bias gradient as a separate ATen
// column sum of grad_y, and casts grad_W and grad_b back to the fp32 parameters. Here cuBLASLt
// returns grad_W (and grad_b) in fp32 (fp32 accumulation as before, without the bf16 rounding:
// the same or better values), so the casts go away. How cuBLASLt runs the epilogue's bias sum is
// its choice: in the ViT-B/16 profile on an H200 it ran as a kernel of its own, another pass
// over grad_y (docs/benchmarks.md). So the model moves the bias sums of attn.proj and mlp.fc2
// into the fused LayerNorm backward (fused_norm.h), and those of mlp.fc1 and attn.qkv into the
// GELU backward and the attention heads' gather (fused_bias_sums.h), which write grad_y anyway;
// their GEMMs run without the epilogue. The forward pass
// and grad_x are autocast's own (its bf16 weight and bias from the model's one-kernel casts where
// those are in use, weight_casts.h). Shapes without a cuBLASLt algorithm fall back to ATen calls with
// the same outputs (logged once).
#pragma once

#include <torch/torch.h>

namespace vit::model {

// True when the fused backward is compiled in (a CUDA build) and applies: x on a GPU under bf16
// autocast with gradients recorded, fp32 weight and bias.
bool fused_linear_applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// y = x W^T + b as autocast computes it (bf16 out); x: [..., in], weight [out, in] and bias [out]
// fp32 parameters. Call only where fused_linear_applies(x, weight, bias).
// bias_grad = false: backward leaves the bias gradient to the kernel that consumes y's gradient
// (fused_add_layer_norm's branch_bias, fused_gelu's or fused_split_heads' bias), which sums it in a pass it makes anyway;
// the weight-gradient GEMM then runs without the epilogue.
torch::Tensor fused_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           bool bias_grad = true);

// Process-wide (train.gemm_autotune; on by default): the first weight-gradient GEMM of each shape
// outside a CUDA graph capture times up to 8 algorithms cuBLASLt's heuristic offers and, without
// the bias gradient, ATen's own mm with fp32 output (by default cuBLAS's choice of kernel), and keeps the
// fastest (only if 3% faster than the heuristic's first choice), as cuDNN's benchmark mode does
// for convolutions. Each choice is logged. It can differ between runs, and so can the last bits
// of the weight gradients; off: always the heuristic's first choice. Set before training starts.
void set_gemm_autotune(bool on);

// Tests only: every weight-gradient GEMM from now on runs candidate `choice` of its shape's
// cuBLASLt list (the last where the list is shorter), or with kForceAtenMm ATen's mm where there
// is no bias gradient (else the heuristic's first); -1: back to the normal choice.
constexpr int kForceAtenMm = -2;
void force_gemm_choice_for_tests(int choice);

}  // namespace vit::model

// Softmax attention over short sequences, for bf16 on a GPU (kernels in attention_kernels.cu):
// what the CIFAR-10 recipe's ViT runs, 65 tokens in heads of 16 dimensions, where ATen's flash
// and cuDNN kernels spent 45% of the training step (64 x 64 tiles padded from 65 tokens). One
// block per (image, head) pair holds the whole sequence (padded to a multiple of 16) in shared
// memory, one warp per 16 queries runs every product on tensor cores with the scores in registers;
// read straight from the qkv projection's output and written straight in the output projection's
// input layout (no head split, no transpose).
// Values as the flash kernels compute them: bf16 inputs, fp32 scores and softmax, probabilities
// (and in backward dS) rounded to bf16 for their products, fp32 accumulation, outputs and
// gradients rounded to bf16 once. No dropout on the attention probabilities, no mask; the model
// uses it under train.attention: auto where it applies.
#pragma once

#include <torch/torch.h>

namespace vit::model {

// True when the kernels are compiled in and take `tokens` tokens per sequence and heads of
// `head_dim` on this GPU: head_dim 16 or 32, up to 160 tokens.
bool fused_attention_supported(int64_t tokens, int64_t head_dim);

// softmax(q k^T / sqrt(Dh)) v for qkv [B, N, 3, H, Dh] bf16 on a GPU (timm's layout of the qkv
// projection's output), as [B, N, H * Dh] (the heads side by side, as timm's
// transpose(1, 2).reshape); backward returns qkv's gradient in its layout. Call only where
// fused_attention_supported(N, Dh).
torch::Tensor fused_attention(const torch::Tensor& qkv);

}  // namespace vit::model

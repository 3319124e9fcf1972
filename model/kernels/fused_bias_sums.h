// Bias gradients summed by backward kernels that write the matching gradient anyway, under bf16
// autocast on a GPU (kernels in bias_sum_kernels.cu). The Linear whose bias it is then computes
// only its weight gradient (fused_linear(..., bias_grad=false)).
//
// - GELU after mlp.fc1: autocast's MLP runs GELU backward (one pass over [rows, mlp_dim]) and then
//   the Linear's backward reads that gradient again for the bias column sums. Here the GELU
//   backward kernel keeps per-block column sums as it goes. The forward is ATen's gelu, the input
//   gradient ATen's formula in fp32 rounded to bf16 once; the bias gradient sums those fp32
//   values (autocast sums the bf16-rounded ones).
// - The attention's split of attn.qkv's output into q, k, v heads: backward gathers dq, dk and dv
//   into the projection's gradient layout (a copy it needs anyway) and sums its columns, the qkv
//   bias gradient, in the same pass. The bias gradient is the fp32 column sum of the bf16 qkv
//   gradient, as cuBLASLt's bias-gradient epilogue computes it (autocast's own linear rounds
//   it to bf16 first).
// - The token embedding, cat(cls_token, patch tokens) + pos_embed: pos_embed is a bias over the
//   token positions. Forward is one pass (fp32 out, as timm's cat and add under autocast); its
//   backward writes the patch tokens' gradient in bf16 (the patch embedding's input to its weight
//   gradient) and sums the fp32 gradient over the images in the same pass: pos_embed's gradient,
//   whose row 0 is cls_token's. Without it: a cat, a broadcast add, a cast, a slice copy and two
//   reductions.
// Backward with create_graph (double backward) takes ATen's differentiable ops instead.
#pragma once

#include <torch/torch.h>

namespace vit::model {

// True when the kernel is compiled in and takes a GELU over `width` columns (a multiple of 8).
bool fused_gelu_supported(int64_t width);

// gelu(x) (exact, erf form) for x [..., width] bf16 on a GPU, x = Linear(...) with bias `bias`
// (fp32 [width]) already added; backward returns x's gradient and the bias gradient. The Linear
// must leave its bias gradient out (fused_linear(..., bias_grad=false)).
torch::Tensor fused_gelu(const torch::Tensor& x, const torch::Tensor& bias);

// True when the kernel is compiled in and takes heads of `head_dim` (a multiple of 8).
bool fused_split_heads_supported(int64_t head_dim);

// q, k, v [B, H, N, Dh] as views of qkv [B, N, 3, H, Dh] (bf16 on a GPU: the qkv Linear's output,
// bias `bias` (fp32 [3 H Dh]) included), as timm's permute(2, 0, 3, 1, 4).unbind(0); backward
// returns qkv's gradient and the bias gradient.
std::vector<torch::Tensor> fused_split_heads(const torch::Tensor& qkv, const torch::Tensor& bias);

// True when the kernels are compiled in and take tokens of `width` (a multiple of 8).
bool fused_tokens_supported(int64_t width);

// cat(cls.expand(B), patches) + pos as fp32 [B, N, D], for patches [B, N - 1, D] bf16 on a GPU,
// cls [1, 1, D] and pos [1, N, D] fp32 on the same GPU; backward returns the three gradients
// (patches' in bf16).
torch::Tensor fused_tokens(const torch::Tensor& patches, const torch::Tensor& cls, const torch::Tensor& pos);

}  // namespace vit::model

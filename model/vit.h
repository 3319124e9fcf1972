// The Vision Transformer of "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021).
//
// Parameter names and shapes equal timm's VisionTransformer (cls_token, pos_embed,
// patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*,
// head.*), plus pre_logits.fc.* for the paper's pretraining head, so weights move both ways.
// Dimension letters used in comments: B batch, C channels, N tokens (1 + grid_h * grid_w),
// D width, H heads, Dh = D / H, M mlp_dim, K classes.
//
// Not here: losses, optimisers, mixed precision policy (the trainer sets autocast), weight
// files (safetensors.h) and transfer between resolutions (transfer.h).
#pragma once

#include <torch/torch.h>

#include "model/config.h"
#include "model/kernels/weight_casts.h"

namespace vit::model {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t width, int64_t num_heads, double attn_dropout, double proj_dropout,
                bool fused_bias_grad = false);
  torch::Tensor forward(const torch::Tensor& x);  // [B, N, D] -> [B, N, D]
  // proj_bias_grad = false: the output projection leaves its bias gradient to the caller's fused
  // LayerNorm (fused_add_layer_norm's branch_bias); only where proj_bias_outside() allows it.
  torch::Tensor compute(const torch::Tensor& x, bool proj_bias_grad);
  // True when compute(x, false) may run: the fused linear applies, no active dropout after proj.
  bool proj_bias_outside(const torch::Tensor& x) const;
  const torch::Tensor& proj_bias() const { return proj_->bias; }

 private:
  // q, k, v [B, H, N, Dh] through at::scaled_dot_product_attention, as [B, N, H * Dh].
  torch::Tensor heads_attention(const std::vector<torch::Tensor>& parts);
  int64_t num_heads_;
  double attn_dropout_;
  bool fused_bias_grad_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
  torch::nn::Dropout proj_drop_{nullptr};
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t width, int64_t mlp_dim, double dropout, bool fused_bias_grad = false);
  torch::Tensor forward(const torch::Tensor& x);  // [B, N, D] -> [B, N, D]
  // fc2_bias_grad = false: fc2 leaves its bias gradient to the caller's fused LayerNorm; only
  // where fc2_bias_outside() allows it. fc1's bias gradient comes from the GELU backward kernel
  // wherever the fused linear and fused_gelu apply (fused_bias_sums.h).
  torch::Tensor compute(const torch::Tensor& x, bool fc2_bias_grad);
  bool fc2_bias_outside(const torch::Tensor& x) const;
  const torch::Tensor& fc2_bias() const { return fc2_->bias; }

 private:
  bool fused_bias_grad_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& config, double drop_path);
  torch::Tensor forward(torch::Tensor x);  // pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))

  // The parts, for the fused path (VisionTransformerImpl::forward_fused).
  const torch::nn::LayerNorm& norm1() const { return norm1_; }
  const torch::nn::LayerNorm& norm2() const { return norm2_; }
  Attention& attn() { return attn_; }
  Mlp& mlp() { return mlp_; }
  // Drop path as a per-sample factor [B] (0 or 1/keep), fp32; undefined when inactive.
  torch::Tensor drop_path_scale(const torch::Tensor& x);

 private:
  torch::Tensor drop_path(const torch::Tensor& branch);
  double drop_path_;
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  Attention attn_{nullptr};
  Mlp mlp_{nullptr};
};
TORCH_MODULE(Block);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  // Builds and initialises (timm's default) with the global torch generator: seed it first.
  explicit VisionTransformerImpl(const ModelConfig& config);

  torch::Tensor forward(const torch::Tensor& images);          // [B, C, H, W] -> logits [B, K]
  torch::Tensor forward_features(const torch::Tensor& images);  // -> [B, N, D] after the final norm

  const ModelConfig& config() const { return config_; }
  // The bf16 copies of every Linear's weight and bias made by the last forward that used them
  // (with model.fused_bias_grad, on a GPU under bf16 autocast, with gradients recorded).
  const WeightCasts& weight_casts() const { return *weight_casts_; }

 private:
  void initialise();
  torch::Tensor embed_patches(const torch::Tensor& images);  // [B, C, H, W] -> [B, N-1, D]
  // forward_features, but bf16 where the fused path produced bf16 (forward() reads one token).
  torch::Tensor forward_tokens(const torch::Tensor& images);
  bool use_fused_tokens(const torch::Tensor& patch_tokens) const;  // fused_tokens for cat + pos_embed
  bool use_fused_norm(const torch::Tensor& x) const;
  torch::Tensor forward_fused(torch::Tensor x);  // blocks + final norm with fused_norm.h
  // Casts every Linear's weight and bias to bf16 in one kernel where the fused linear applies to
  // this forward (weight_casts.h); returns the casts to use, or null.
  const WeightCasts* cast_weights(const torch::Tensor& images);

  ModelConfig config_;
  torch::nn::Conv2d patch_proj_{nullptr};  // registered as patch_embed.proj
  torch::Tensor cls_token_;                // [1, 1, D]
  torch::Tensor pos_embed_;                // [1, N, D]
  torch::nn::Dropout pos_drop_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear pre_logits_fc_{nullptr};  // mlp head only, registered as pre_logits.fc
  torch::nn::Linear head_{nullptr};
  std::vector<torch::Tensor> linear_params_;  // every Linear's weight and bias, and the patch embedding's
  std::shared_ptr<WeightCasts> weight_casts_ = std::make_shared<WeightCasts>();
};
TORCH_MODULE(VisionTransformer);

// Truncated normal as timm's trunc_normal_ (bounds are absolute values, not multiples of std).
void trunc_normal_(torch::Tensor& t, double std, double lo = -2.0, double hi = 2.0);

}  // namespace vit::model

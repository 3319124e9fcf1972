#include "model/vit.h"

#include <cmath>

#include <ATen/autocast_mode.h>

#include <tuple>

#include "core/errors.h"
#include "model/kernels/fused_attention.h"
#include "model/kernels/fused_bias_sums.h"
#include "model/kernels/fused_linear.h"
#include "model/kernels/fused_norm.h"

namespace vit::model {
namespace F = torch::nn::functional;

namespace {
// ATen's linear, not the C++ frontend's Linear::forward: that one runs matmul + a separate bias
// add for 3-D inputs, which loses cuBLASLt's fused bias epilogue and yields strided weight
// gradients (slow to accumulate). at::linear flattens contiguous [B, N, D] inputs into addmm,
// exactly as PyTorch's nn.Linear does. fused: the same forward, with weight and bias gradients
// from one GEMM where it applies (fused_linear.h).
// bias_grad = false (the caller checked fused_linear_applies): a later fused kernel computes the
// bias gradient (fused_linear.h).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool fused,
                     bool bias_grad = true) {
  if (fused && fused_linear_applies(x, weight, bias)) return fused_linear(x, weight, bias, bias_grad);
  VIT_CHECK(bias_grad, ModelError, "linear: the bias gradient can move to a fused kernel only with the fused linear");
  return at::linear(x, weight, bias);
}
torch::Tensor linear(const torch::nn::Linear& layer, const torch::Tensor& x, bool fused, bool bias_grad = true) {
  return linear(x, layer->weight, layer->bias, fused, bias_grad);
}
bool fused_applies(const torch::nn::Linear& layer, const torch::Tensor& x, bool fused) {
  return fused && fused_linear_applies(x, layer->weight, layer->bias);
}
// The bias gradient of `layer` may move to the kernel that consumes its output through `drop`:
// the fused linear applies and the dropout in between passes gradients through unchanged.
bool bias_grad_can_move(const torch::nn::Linear& layer, const torch::nn::Dropout& drop, const torch::Tensor& x,
                        bool fused) {
  return fused_applies(layer, x, fused) && !(drop->is_training() && drop->options.p() > 0.0);
}
// q, k, v as views [B, H, N, Dh] of the qkv projection [B, N, 3, H, Dh] (timm's
// permute(2, 0, 3, 1, 4).unbind(0)), with a backward that writes dq, dk and dv straight into one
// gradient in the projection's layout. Autograd's own backward of unbind + permute stacks them
// as [3, B, H, N, Dh] and then copies that into [B, N, 3, H, Dh]: two full passes, the stack from
// strided attention gradients (~12% of a ViT-B/16 step in an H200 profile, docs/benchmarks.md).
struct SplitHeadsFn : public torch::autograd::Function<SplitHeadsFn> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv) {
    ctx->saved_data["sizes"] = qkv.sizes().vec();
    auto heads = qkv.permute({2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
    return {heads[0], heads[1], heads[2]};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto grad = torch::empty(ctx->saved_data["sizes"].toIntVector(), grads[0].options());
    auto heads = grad.permute({2, 0, 3, 1, 4});
    for (int64_t i = 0; i < 3; ++i) heads[i].copy_(grads[static_cast<size_t>(i)]);
    return {grad};
  }
};

// train.attention: auto takes vitrain's short-sequence kernel where it applies (fused_attention.h).
bool short_attention = true;
}  // namespace

void set_attention_backend(const std::string& name) {
  VIT_CHECK(is_attention_backend(name), ConfigError,
            "attention backend must be auto, flash, efficient, cudnn or math, got '", name, "'");
  auto& context = at::globalContext();
  const bool all = name == "auto";
  short_attention = all;
  context.setSDPUseFlash(all || name == "flash");
  context.setSDPUseMemEfficient(all || name == "efficient");
  context.setSDPUseCuDNN(all || name == "cudnn");
  context.setSDPUseMath(all || name == "math");
}

void trunc_normal_(torch::Tensor& t, double std, double lo, double hi) {
  // Inverse-CDF sampling, as PyTorch's trunc_normal_: uniform in [cdf(lo), cdf(hi)], then erfinv.
  torch::NoGradGuard no_grad;
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  double l = cdf(lo / std), u = cdf(hi / std);
  t.uniform_(2 * l - 1, 2 * u - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(lo, hi);
}

// ---- Attention ----
AttentionImpl::AttentionImpl(int64_t width, int64_t num_heads, double attn_dropout, double proj_dropout,
                             bool fused_bias_grad)
    : num_heads_(num_heads), attn_dropout_(attn_dropout), fused_bias_grad_(fused_bias_grad) {
  qkv_ = register_module("qkv", torch::nn::Linear(width, 3 * width));
  proj_ = register_module("proj", torch::nn::Linear(width, width));
  proj_drop_ = register_module("proj_drop", torch::nn::Dropout(proj_dropout));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) { return compute(x, true); }

bool AttentionImpl::proj_bias_outside(const torch::Tensor& x) const {
  // x: the block input, the same device / dtype conditions as the projection's input.
  return bias_grad_can_move(proj_, proj_drop_, x, fused_bias_grad_);
}

torch::Tensor AttentionImpl::compute(const torch::Tensor& x, bool proj_bias_grad) {
  VIT_CHECK(proj_bias_grad || proj_bias_outside(x), ModelError,
            "attention: the projection's bias gradient cannot move out here (proj_bias_outside() is false)");
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), Dh = D / num_heads_;
  // vitrain's kernel for short sequences of small heads (bf16 on a GPU, no attention dropout):
  // straight from the qkv projection's output to the output projection's input layout.
  const bool in_bf16 = x.scalar_type() == torch::kBFloat16 ||
                       (at::autocast::is_autocast_enabled(at::kCUDA) &&
                        at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16);
  torch::Tensor out;
  if (short_attention && x.is_cuda() && in_bf16 && !(is_training() && attn_dropout_ > 0.0) &&
      fused_attention_supported(N, Dh)) {
    out = fused_attention(linear(qkv_, x, fused_bias_grad_).view({B, N, 3, num_heads_, Dh}));
  } else if (fused_applies(qkv_, x, fused_bias_grad_) && fused_split_heads_supported(Dh)) {
    // The qkv bias gradient from the heads' backward kernel (fused_bias_sums.h).
    auto qkv = linear(qkv_, x, true, /*bias_grad=*/false).view({B, N, 3, num_heads_, Dh});
    out = heads_attention(fused_split_heads(qkv, qkv_->bias));
  } else {
    out = heads_attention(SplitHeadsFn::apply(linear(qkv_, x, fused_bias_grad_).view({B, N, 3, num_heads_, Dh})));
  }
  return proj_drop_(linear(proj_, out, fused_bias_grad_, proj_bias_grad));
}

torch::Tensor AttentionImpl::heads_attention(const std::vector<torch::Tensor>& parts) {
  const auto &q = parts[0], &k = parts[1], &v = parts[2];  // [B, H, N, Dh] each
  // ATen's fused attention (flash / memory-efficient / cuDNN kernels on GPU; math on CPU).
  auto out = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{},
                                              is_training() ? attn_dropout_ : 0.0);  // [B, H, N, Dh]
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * q.size(3)});
}

// ---- MLP ----
MlpImpl::MlpImpl(int64_t width, int64_t mlp_dim, double dropout, bool fused_bias_grad)
    : fused_bias_grad_(fused_bias_grad) {
  fc1_ = register_module("fc1", torch::nn::Linear(width, mlp_dim));
  fc2_ = register_module("fc2", torch::nn::Linear(mlp_dim, width));
  drop_ = register_module("drop", torch::nn::Dropout(dropout));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) { return compute(x, true); }

bool MlpImpl::fc2_bias_outside(const torch::Tensor& x) const {
  return bias_grad_can_move(fc2_, drop_, x, fused_bias_grad_);
}

torch::Tensor MlpImpl::compute(const torch::Tensor& x, bool fc2_bias_grad) {
  VIT_CHECK(fc2_bias_grad || fc2_bias_outside(x), ModelError,
            "mlp: fc2's bias gradient cannot move out here (fc2_bias_outside() is false)");
  // Exact (erf) GELU, as timm's nn.GELU; fc1's bias gradient from the GELU backward kernel where it applies.
  torch::Tensor h;
  if (fused_applies(fc1_, x, fused_bias_grad_) && fused_gelu_supported(fc1_->weight.size(0))) {
    h = fused_gelu(linear(fc1_, x, true, /*bias_grad=*/false), fc1_->bias);
  } else {
    h = F::gelu(linear(fc1_, x, fused_bias_grad_));
  }
  return drop_(linear(fc2_, drop_(h), fused_bias_grad_, fc2_bias_grad));
}

// ---- Block ----
BlockImpl::BlockImpl(const ModelConfig& c, double drop_path) : drop_path_(drop_path) {
  auto ln = [&](void) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width}).eps(c.layer_norm_eps));
  };
  norm1_ = register_module("norm1", ln());
  attn_ = register_module("attn", Attention(c.width, c.num_heads, c.attn_dropout, c.dropout, c.fused_bias_grad));
  norm2_ = register_module("norm2", ln());
  mlp_ = register_module("mlp", Mlp(c.width, c.mlp_dim, c.dropout, c.fused_bias_grad));
}

torch::Tensor BlockImpl::drop_path(const torch::Tensor& branch) {
  // Stochastic depth: drop the whole residual branch per sample, rescale the kept ones.
  if (!is_training() || drop_path_ <= 0.0) return branch;
  double keep = 1.0 - drop_path_;
  auto mask = torch::empty({branch.size(0), 1, 1}, branch.options()).bernoulli_(keep).div_(keep);
  return branch * mask;
}

torch::Tensor BlockImpl::drop_path_scale(const torch::Tensor& x) {
  if (!is_training() || drop_path_ <= 0.0) return {};
  double keep = 1.0 - drop_path_;
  return torch::empty({x.size(0)}, x.options().dtype(torch::kFloat32)).bernoulli_(keep).div_(keep);
}

torch::Tensor BlockImpl::forward(torch::Tensor x) {
  x = x + drop_path(attn_(norm1_(x)));
  x = x + drop_path(mlp_(norm2_(x)));
  return x;
}

// ---- VisionTransformer ----
VisionTransformerImpl::VisionTransformerImpl(const ModelConfig& c) : config_(c) {
  validate(c);
  const int64_t D = c.width;
  // Registration order equals timm's parameter order: cls_token, pos_embed, patch_embed, blocks, norm, head.
  cls_token_ = register_parameter("cls_token", torch::zeros({1, 1, D}));
  pos_embed_ = register_parameter("pos_embed", torch::zeros({1, c.num_tokens(), D}));
  auto patch_embed = register_module("patch_embed", std::make_shared<torch::nn::Module>());
  patch_proj_ = patch_embed->register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.channels, D, c.patch_size).stride(c.patch_size)));
  pos_drop_ = register_module("pos_drop", torch::nn::Dropout(c.dropout));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) {
    // Stochastic depth rate grows linearly from 0 to drop_path over the blocks.
    // (timm: torch.linspace(0, drop_path, depth), which is [0] for a single block.)
    double rate = c.depth > 1 ? c.drop_path * static_cast<double>(i) / (c.depth - 1) : 0.0;
    blocks_->push_back(Block(c, rate));
  }
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D}).eps(c.layer_norm_eps)));
  if (c.head == "mlp") {
    auto pre_logits = register_module("pre_logits", std::make_shared<torch::nn::Module>());
    pre_logits_fc_ = pre_logits->register_module("fc", torch::nn::Linear(D, D));
  }
  head_ = register_module("head", torch::nn::Linear(D, c.num_classes));
  linear_params_ = {patch_proj_->weight, patch_proj_->bias};
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      linear_params_.push_back(linear->weight);
      linear_params_.push_back(linear->bias);
    }
  }
  initialise();
}

void VisionTransformerImpl::initialise() {
  // timm's default ('' mode): trunc_normal(0.02) for pos_embed and every Linear weight, zero
  // biases, cls_token normal(1e-6), LayerNorm ones/zeros, the patch conv at PyTorch's default;
  // then the head zeroed where model.head_init asks for it.
  torch::NoGradGuard no_grad;
  trunc_normal_(pos_embed_, 0.02);
  cls_token_.normal_(0.0, 1e-6);
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      trunc_normal_(linear->weight, 0.02);
      linear->bias.zero_();
    }
  }
  if (config_.zero_head()) {
    // Fine-tuning head: zero-initialised, so training starts from the backbone's features alone.
    head_->weight.zero_();
    head_->bias.zero_();
  }
}

torch::Tensor VisionTransformerImpl::forward_features(const torch::Tensor& images) {
  UseWeightCasts casts(cast_weights(images));
  // fp32 on every path, as timm under autocast (the fused path's final norm is bf16).
  auto x = forward_tokens(images);
  return x.scalar_type() == torch::kBFloat16 ? x.to(torch::kFloat32) : x;
}

torch::Tensor VisionTransformerImpl::forward_tokens(const torch::Tensor& images) {
  VIT_CHECK(images.dim() == 4 && images.size(1) == config_.channels && images.size(2) == config_.height() &&
                images.size(3) == config_.width_px(),
            ModelError, "the model expects images [B, ", config_.channels, ", ", config_.height(), ", ",
            config_.width_px(), "] (model.image_size, model.channels), got ", images.sizes());
  const int64_t B = images.size(0);
  auto x = embed_patches(images);  // [B, N-1, D]
  if (use_fused_tokens(x)) {
    x = fused_tokens(x, cls_token_, pos_embed_);  // one pass each way; fused_bias_sums.h
  } else {
    // fp32 as timm's under autocast (cat promotes the bf16 patch tokens to the class token's fp32).
    x = torch::cat({cls_token_.expand({B, -1, -1}), x}, 1) + pos_embed_;  // [B, N, D]
  }
  x = pos_drop_(x);
  if (use_fused_norm(x)) return forward_fused(x);
  for (const auto& block : *blocks_) x = block->as<BlockImpl>()->forward(x);
  return norm_(x);
}

torch::Tensor VisionTransformerImpl::embed_patches(const torch::Tensor& images) {
  if (!images.is_cuda()) return patch_proj_(images).flatten(2).transpose(1, 2);
  // A convolution whose kernel equals its stride is one matmul over the flattened patches. On the
  // GPU that is much faster than cuDNN's kernels for it (implicit GEMM plus NCHW -> NHWC
  // transposes: ~2 ms of a ViT-S/16 step on an H100); same weights, same token order.
  const int64_t B = images.size(0), C = config_.channels, P = config_.patch_size;
  const int64_t gh = config_.grid_h(), gw = config_.grid_w(), D = config_.width;
  auto x = images;
  if (at::autocast::is_autocast_enabled(at::kCUDA)) x = x.to(at::autocast::get_autocast_dtype(at::kCUDA));
  auto patches = x.reshape({B, C, gh, P, gw, P}).permute({0, 2, 4, 1, 3, 5}).reshape({B, gh * gw, C * P * P});
  return linear(patches, patch_proj_->weight.view({D, C * P * P}), patch_proj_->bias, config_.fused_bias_grad);
}

bool VisionTransformerImpl::use_fused_tokens(const torch::Tensor& patch_tokens) const {
  return config_.fused_bias_grad && patch_tokens.is_cuda() && patch_tokens.scalar_type() == torch::kBFloat16 &&
         cls_token_.scalar_type() == torch::kFloat32 && pos_embed_.scalar_type() == torch::kFloat32 &&
         fused_tokens_supported(config_.width);
}

bool VisionTransformerImpl::use_fused_norm(const torch::Tensor& x) const {
  return config_.fused_norm && x.dim() == 3 && at::autocast::is_autocast_enabled(at::kCUDA) &&
         at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16 && fused_norm_supported(x);
}

torch::Tensor VisionTransformerImpl::forward_fused(torch::Tensor x) {
  // x: the fp32 residual stream, as under autocast. Each LayerNorm also adds the branch before
  // it (bf16, times its drop-path factor) to x, so the adds and casts happen inside the kernel.
  // Where the branch's last Linear (attn.proj, mlp.fc2) allows it, the norm's backward kernel also
  // sums that Linear's bias gradient (branch_bias; fused_norm.h).
  torch::Tensor normed, branch, scale, branch_bias;
  auto norm_after = [&](const torch::nn::LayerNorm& norm) {
    if (!branch.defined()) return fused_layer_norm(x, norm);
    std::tie(x, normed) = fused_add_layer_norm(x, branch.to(torch::kBFloat16), scale, norm, branch_bias);
    return normed;
  };
  for (const auto& module : *blocks_) {
    auto& block = *module->as<BlockImpl>();
    normed = norm_after(block.norm1());
    auto& attn = *block.attn();
    const bool proj_outside = attn.proj_bias_outside(normed);
    branch = attn.compute(normed, !proj_outside);
    branch_bias = proj_outside ? attn.proj_bias() : torch::Tensor();
    scale = block.drop_path_scale(x);
    normed = norm_after(block.norm2());
    auto& mlp = *block.mlp();
    const bool fc2_outside = mlp.fc2_bias_outside(normed);
    branch = mlp.compute(normed, !fc2_outside);
    branch_bias = fc2_outside ? mlp.fc2_bias() : torch::Tensor();
    scale = block.drop_path_scale(x);
  }
  return norm_after(norm_);  // [B, N, D] bf16
}

const WeightCasts* VisionTransformerImpl::cast_weights(const torch::Tensor& images) {
  const bool fused = config_.fused_bias_grad && images.is_cuda() && torch::GradMode::is_enabled() &&
                     at::autocast::is_autocast_enabled(at::kCUDA) &&
                     at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
  return fused && weight_casts_->refresh(linear_params_) ? weight_casts_.get() : nullptr;
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  UseWeightCasts casts(cast_weights(images));
  auto cls = forward_tokens(images).select(1, 0);  // [B, D], the [CLS] token
  if (pre_logits_fc_) cls = torch::tanh(linear(pre_logits_fc_, cls, config_.fused_bias_grad));
  return linear(head_, cls, config_.fused_bias_grad);  // [B, K]
}

}  // namespace vit::model

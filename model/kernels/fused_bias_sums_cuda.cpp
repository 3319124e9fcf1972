// Autograd wrappers around the kernels that sum a bias gradient (see fused_bias_sums.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <array>

#include "core/errors.h"
#include "model/kernels/bias_sum_kernels.h"
#include "model/kernels/fused_bias_sums.h"
#include "model/kernels/kernel_ptr.h"

namespace vit::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Row blocks per column strip: about 8 blocks per SM over the whole grid, at most one per row.
int row_blocks(int64_t rows, int64_t cols) {
  const int64_t strips = (cols + kernels::kSumBlockColumns - 1) / kernels::kSumBlockColumns;
  const int64_t target = 8 * static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  return static_cast<int>(std::clamp<int64_t>((target + strips - 1) / strips, 1, std::max<int64_t>(rows, 1)));
}

struct GeluFn : public torch::autograd::Function<GeluFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& bias) {
    // The bias is an input for its gradient only: x already holds it.
    (void)bias;
    ctx->save_for_backward({x});
    return {at::gelu(x)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto x = ctx->get_saved_variables()[0].contiguous();
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = x.size(-1), rows = x.numel() / cols;
    auto dy = grads[0].to(x.scalar_type()).contiguous();
    if (!ctx->needs_input_grad(1)) return {at::gelu_backward(dy, x), torch::Tensor()};  // a frozen bias
    if (torch::GradMode::is_enabled()) {  // create_graph: ATen's differentiable ops, the same values
      return {at::gelu_backward(dy, x),
              at::gelu_backward(dy.to(torch::kFloat32), x.to(torch::kFloat32)).reshape({rows, cols}).sum(0)};
    }
    auto dx = torch::empty_like(x);
    const int blocks = row_blocks(rows, cols);
    auto partial = torch::empty({blocks, cols}, x.options().dtype(torch::kFloat32));
    kernels::GeluBackwardArgs args{data_or_null<const uint16_t>(x), data_or_null<const uint16_t>(dy),
                                   data_or_null<uint16_t>(dx), data_or_null<float>(partial), rows, cols};
    if (!kernels::gelu_backward_supported(args)) {  // an unaligned view: ATen's passes, same values
      dx = at::gelu_backward(dy, x);
      return {dx, at::gelu_backward(dy.to(torch::kFloat32), x.to(torch::kFloat32)).reshape({rows, cols}).sum(0)};
    }
    const auto status = kernels::launch_gelu_backward(args, blocks, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused GELU backward: ", cudaGetErrorString(status));
    return {dx, partial.sum(0)};
  }
};

struct SplitHeadsSumFn : public torch::autograd::Function<SplitHeadsSumFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& qkv, const torch::Tensor& bias) {
    // The bias is an input for its gradient only: qkv already holds it.
    (void)bias;
    ctx->saved_data["sizes"] = qkv.sizes().vec();
    auto heads = qkv.permute({2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
    return {heads[0], heads[1], heads[2]};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto sizes = ctx->saved_data["sizes"].toIntVector();  // [B, N, 3, H, Dh]
    const int64_t B = sizes[0], N = sizes[1], H = sizes[3], Dh = sizes[4];
    const auto options = grads[0].defined() ? grads[0].options() : grads[1].defined() ? grads[1].options()
                                                                                      : grads[2].options();
    c10::cuda::CUDAGuard guard(options.device());
    const auto bf16 = options.dtype(torch::kBFloat16);
    std::array<torch::Tensor, 3> g;
    for (size_t i = 0; i < 3; ++i) {  // an unused output's gradient: zeros (autograd's, or ours if undefined)
      g[i] = grads[i].defined() ? grads[i].to(torch::kBFloat16) : torch::zeros({B, H, N, Dh}, bf16);
      if (g[i].stride(3) != 1) g[i] = g[i].contiguous();
    }
    auto grad = torch::empty(sizes, bf16);
    const bool bias_grad = ctx->needs_input_grad(1);
    const int64_t cols = 3 * H * Dh, rows = B * N;
    const int blocks = row_blocks(rows, cols);
    auto partial = torch::empty({blocks, cols}, options.dtype(torch::kFloat32));
    kernels::HeadsGatherArgs args{};
    for (size_t i = 0; i < 3; ++i) {
      args.grad[i] = data_or_null<const uint16_t>(g[i]);
      for (int d = 0; d < 3; ++d) args.stride[i][d] = g[i].stride(d);
    }
    args.grad_qkv = data_or_null<uint16_t>(grad);
    args.bias_partial = data_or_null<float>(partial);
    args.batch = B, args.heads = H, args.tokens = N, args.head_dim = Dh;
    // A frozen bias, odd strides, or create_graph (differentiable copies): the same values by copies.
    if (!bias_grad || !kernels::heads_gather_supported(args) || torch::GradMode::is_enabled()) {
      auto heads = grad.permute({2, 0, 3, 1, 4});
      for (size_t i = 0; i < 3; ++i) heads[static_cast<int64_t>(i)].copy_(g[i]);
      if (!bias_grad) return {grad, torch::Tensor()};
      return {grad, grad.view({rows, cols}).sum(0, /*keepdim=*/false, torch::kFloat32)};
    }
    const auto status = kernels::launch_heads_gather(args, blocks, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused split heads backward: ", cudaGetErrorString(status));
    return {grad, partial.sum(0)};
  }
};

// The token embedding (fused_bias_sums.h). The unfused ops, for create_graph and odd layouts:
// the same values (the sums in another order).
torch::Tensor tokens_by_aten(const torch::Tensor& patches, const torch::Tensor& cls, const torch::Tensor& pos) {
  return torch::cat({cls.expand({patches.size(0), -1, -1}), patches.to(torch::kFloat32)}, 1) + pos;
}

struct TokensFn : public torch::autograd::Function<TokensFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& patches, const torch::Tensor& cls,
                               const torch::Tensor& pos) {
    const int64_t B = patches.size(0), N = pos.size(1), D = pos.size(2);
    ctx->saved_data["sizes"] = std::vector<int64_t>{B, N, D};
    kernels::TokensForwardArgs args{data_or_null<const uint16_t>(patches), data_or_null<const float>(cls),
                                    data_or_null<const float>(pos), nullptr, B, N, D};
    if (!kernels::tokens_forward_supported(args)) return {tokens_by_aten(patches, cls, pos)};  // (a fresh output is aligned)
    auto out = torch::empty({B, N, D}, pos.options());
    args.out = data_or_null<float>(out);
    const auto status = kernels::launch_tokens_forward(args, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused token embedding: ", cudaGetErrorString(status));
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto sizes = ctx->saved_data["sizes"].toIntVector();
    const int64_t B = sizes[0], N = sizes[1], D = sizes[2];
    auto grad = grads[0].to(torch::kFloat32).contiguous();
    c10::cuda::CUDAGuard guard(grad.device());
    const bool cls_grad = ctx->needs_input_grad(1), pos_grad_needed = ctx->needs_input_grad(2);
    auto patches_grad = [&] { return grad.narrow(1, 1, N - 1).to(torch::kBFloat16); };
    if (!cls_grad && !pos_grad_needed) return {patches_grad(), torch::Tensor(), torch::Tensor()};  // frozen
    auto result = [&](torch::Tensor patches, const torch::Tensor& pos_grad) -> variable_list {
      return {std::move(patches), cls_grad ? pos_grad.narrow(1, 0, 1).clone() : torch::Tensor(),
              pos_grad_needed ? pos_grad : torch::Tensor()};
    };
    kernels::TokensBackwardArgs args{data_or_null<const float>(grad), nullptr, nullptr, B, N, D};
    // create_graph (ATen's differentiable ops) or an odd layout: the same values by ATen's ops.
    if (torch::GradMode::is_enabled() || !kernels::tokens_backward_supported(args)) {
      return result(patches_grad(), grad.sum(0, /*keepdim=*/true));
    }
    auto grad_patches = torch::empty({B, N - 1, D}, grad.options().dtype(torch::kBFloat16));
    const int blocks = row_blocks(B, N * D);
    auto partial = torch::empty({blocks, N * D}, grad.options());
    args.grad_patches = data_or_null<uint16_t>(grad_patches);  // fresh allocations: aligned
    args.pos_partial = data_or_null<float>(partial);
    const auto status = kernels::launch_tokens_backward(args, blocks, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused token embedding backward: ", cudaGetErrorString(status));
    return result(grad_patches, partial.sum(0).view({1, N, D}));
  }
};

}  // namespace

bool fused_gelu_supported(int64_t width) { return width > 0 && width % kernels::kSumVector == 0; }

torch::Tensor fused_gelu(const torch::Tensor& x, const torch::Tensor& bias) {
  VIT_CHECK(x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.dim() >= 1 && fused_gelu_supported(x.size(-1)) &&
                bias.defined() && bias.dim() == 1 && bias.size(0) == x.size(-1) &&
                bias.scalar_type() == torch::kFloat32 && bias.device() == x.device(),
            ModelError, "fused GELU: unsupported input ", x.sizes(), " ", x.scalar_type(), " on ", x.device().str(),
            " with bias ", bias.sizes(), " (needs bf16 [..., width] on a GPU, width a multiple of 8, an fp32 bias on the same GPU)");
  return GeluFn::apply(x.contiguous(), bias)[0];
}

bool fused_split_heads_supported(int64_t head_dim) { return head_dim > 0 && head_dim % kernels::kSumVector == 0; }

std::vector<torch::Tensor> fused_split_heads(const torch::Tensor& qkv, const torch::Tensor& bias) {
  VIT_CHECK(qkv.is_cuda() && qkv.scalar_type() == torch::kBFloat16 && qkv.dim() == 5 && qkv.size(2) == 3 &&
                fused_split_heads_supported(qkv.size(4)) && bias.defined() && bias.dim() == 1 &&
                bias.size(0) == 3 * qkv.size(3) * qkv.size(4) && bias.scalar_type() == torch::kFloat32 &&
                bias.device() == qkv.device(),
            ModelError, "fused split heads: unsupported input ", qkv.sizes(), " ", qkv.scalar_type(), " on ",
            qkv.device().str(), " with bias ", bias.sizes(),
            " (needs bf16 [B, N, 3, H, Dh] on a GPU, Dh a multiple of 8, an fp32 bias [3 H Dh] on the same GPU)");
  return SplitHeadsSumFn::apply(qkv, bias);
}

bool fused_tokens_supported(int64_t width) { return width > 0 && width % kernels::kSumVector == 0; }

torch::Tensor fused_tokens(const torch::Tensor& patches, const torch::Tensor& cls, const torch::Tensor& pos) {
  const int64_t D = patches.dim() == 3 ? patches.size(2) : 0;
  VIT_CHECK(patches.is_cuda() && patches.scalar_type() == torch::kBFloat16 && patches.dim() == 3 &&
                fused_tokens_supported(D) && cls.sizes() == torch::IntArrayRef({1, 1, D}) && pos.dim() == 3 &&
                pos.size(0) == 1 && pos.size(1) == patches.size(1) + 1 && pos.size(2) == D &&
                cls.scalar_type() == torch::kFloat32 && pos.scalar_type() == torch::kFloat32 &&
                cls.device() == patches.device() && pos.device() == patches.device(),
            ModelError, "fused token embedding: unsupported input ", patches.sizes(), " ", patches.scalar_type(),
            " on ", patches.device().str(), " with cls_token ", cls.sizes(), " and pos_embed ", pos.sizes(),
            " (needs bf16 patch tokens [B, N - 1, D] on a GPU, D a multiple of 8, fp32 [1, 1, D] and [1, N, D] on the same GPU)");
  c10::cuda::CUDAGuard guard(patches.device());
  return TokensFn::apply(patches.contiguous(), cls.contiguous(), pos.contiguous())[0];
}

}  // namespace vit::model

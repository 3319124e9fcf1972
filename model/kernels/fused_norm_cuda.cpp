// Autograd wrappers around the fused LayerNorm kernels (see fused_norm.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "core/errors.h"
#include "model/kernels/fused_norm.h"
#include "model/kernels/fused_norm_kernels.h"
#include "model/kernels/kernel_ptr.h"

namespace vit::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_cuda(cudaError_t status, const char* what) {
  VIT_CHECK(status == cudaSuccess, ModelError, "fused LayerNorm ", what, ": ", cudaGetErrorString(status));
}

// Forward of both functions: normed = LayerNorm(residual [+ scale * branch]).
variable_list norm_forward(AutogradContext* ctx, const torch::Tensor& residual, const torch::Tensor& branch,
                           const torch::Tensor& scale, const torch::Tensor& weight, const torch::Tensor& bias,
                           double eps, bool sum_branch = false) {
  c10::cuda::CUDAGuard guard(residual.device());
  // An unused output (the final norm's sum) gets an undefined gradient, not a zero-filled one:
  // the kernel skips it.
  ctx->set_materialize_grads(false);
  const int64_t D = residual.size(-1), rows = residual.numel() / D;
  auto x = residual.contiguous();
  auto b = branch.defined() ? branch.contiguous() : branch;
  auto s = scale.defined() ? scale.contiguous() : scale;
  auto sum = b.defined() ? torch::empty_like(x) : torch::Tensor();
  auto normed = torch::empty(x.sizes(), x.options().dtype(torch::kBFloat16));
  auto stats = torch::empty({2, rows}, x.options());
  kernels::NormForwardArgs args{data_or_null<const float>(x),
                                data_or_null<const uint16_t>(b),
                                data_or_null<const float>(s),
                                data_or_null<const float>(weight),
                                data_or_null<const float>(bias),
                                data_or_null<float>(sum),
                                data_or_null<uint16_t>(normed),
                                data_or_null<float>(stats[0]),
                                data_or_null<float>(stats[1]),
                                rows,
                                D,
                                b.defined() ? x.size(1) : 1,
                                static_cast<float>(eps)};
  check_cuda(kernels::launch_norm_forward(args, at::cuda::getCurrentCUDAStream()), "forward");
  ctx->save_for_backward({b.defined() ? sum : x, stats, weight, s});
  ctx->saved_data["has_branch"] = b.defined();
  ctx->saved_data["sum_branch"] = b.defined() && sum_branch;  // the caller checked that it needs a gradient
  if (b.defined()) return {sum, normed};
  return {normed};
}

// Backward: {grad of the residual input, grad of the branch (bf16) or undefined, grad weight, grad bias,
// column sums of the branch gradient in fp32 or undefined}.
std::vector<torch::Tensor> norm_backward(AutogradContext* ctx, torch::Tensor grad_normed,
                                         const torch::Tensor& grad_sum) {
  auto saved = ctx->get_saved_variables();
  const auto& x = saved[0];
  const auto& stats = saved[1];
  const auto& weight = saved[2];
  const auto& scale = saved[3];
  const bool has_branch = ctx->saved_data["has_branch"].toBool();
  const bool sum_branch = ctx->saved_data["sum_branch"].toBool();
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t D = x.size(-1), rows = x.numel() / D;
  grad_normed = grad_normed.defined() ? grad_normed.to(torch::kBFloat16).contiguous()
                                      : torch::zeros(x.sizes(), x.options().dtype(torch::kBFloat16));
  auto grad_res = grad_sum.defined() ? grad_sum.to(torch::kFloat32).contiguous() : torch::Tensor();
  auto grad_x = torch::empty_like(x);
  auto grad_branch = has_branch ? torch::empty(x.sizes(), x.options().dtype(torch::kBFloat16)) : torch::Tensor();
  kernels::NormBackwardArgs args{data_or_null<const uint16_t>(grad_normed),
                                 data_or_null<const float>(grad_res),
                                 data_or_null<const float>(x),
                                 data_or_null<const float>(stats[0]),
                                 data_or_null<const float>(stats[1]),
                                 data_or_null<const float>(weight),
                                 data_or_null<const float>(scale),
                                 data_or_null<float>(grad_x),
                                 data_or_null<uint16_t>(grad_branch),
                                 nullptr,
                                 nullptr,
                                 nullptr,
                                 rows,
                                 D,
                                 has_branch ? x.size(1) : 1,
                                 sum_branch};
  int blocks = 0;
  check_cuda(kernels::norm_backward_blocks(args, x.get_device(), &blocks), "backward grid");
  auto partial = torch::empty({sum_branch ? 3 : 2, blocks, D}, x.options());
  args.weight_partial = data_or_null<float>(partial[0]);
  args.bias_partial = data_or_null<float>(partial[1]);
  if (sum_branch) args.branch_bias_partial = data_or_null<float>(partial[2]);
  if (rows == 0) partial.zero_();
  check_cuda(kernels::launch_norm_backward(args, blocks, at::cuda::getCurrentCUDAStream()), "backward");
  auto sums = partial.sum(1);  // [2 or 3, D]
  return {grad_x, grad_branch, sums[0], sums[1], sum_branch ? sums[2] : torch::Tensor()};
}

struct LayerNormFn : public torch::autograd::Function<LayerNormFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps) {
    return norm_forward(ctx, x, {}, {}, weight, bias, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = norm_backward(ctx, grads[0], {});
    return {g[0], g[2], g[3], torch::Tensor()};
  }
};

struct AddLayerNormFn : public torch::autograd::Function<AddLayerNormFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& residual, const torch::Tensor& branch,
                               const std::optional<torch::Tensor>& scale, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps, const std::optional<torch::Tensor>& branch_bias) {
    // branch_bias is not read: the branch already holds it. It is an input for its gradient
    // (summed only when something needs it).
    return norm_forward(ctx, residual, branch, scale.value_or(torch::Tensor()), weight, bias, eps,
                        branch_bias.has_value() && branch_bias->requires_grad());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = norm_backward(ctx, grads[1], grads[0]);
    return {g[0], g[1], torch::Tensor(), g[2], g[3], torch::Tensor(), g[4]};
  }
};

void check_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm) {
  const auto& options = norm->options;
  VIT_CHECK(fused_norm_supported(x) && options.elementwise_affine() && options.normalized_shape().size() == 1 &&
                options.normalized_shape()[0] == x.size(-1) && norm->weight.scalar_type() == torch::kFloat32,
            ModelError, "fused LayerNorm: unsupported input ", x.sizes(), " ", x.scalar_type(), " on ",
            x.device().str(), " (check fused_norm_supported() first)");
}

}  // namespace

bool fused_norm_supported(const torch::Tensor& x) {
  return x.is_cuda() && x.scalar_type() == torch::kFloat32 && x.dim() >= 2 && x.size(-1) > 0 &&
         x.size(-1) <= kernels::kMaxFusedWidth;
}

torch::Tensor fused_layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm) {
  check_norm(x, norm);
  return LayerNormFn::apply(x, norm->weight, norm->bias, norm->options.eps())[0];
}

std::pair<torch::Tensor, torch::Tensor> fused_add_layer_norm(const torch::Tensor& residual,
                                                             const torch::Tensor& branch,
                                                             const torch::Tensor& sample_scale,
                                                             const torch::nn::LayerNorm& norm,
                                                             const torch::Tensor& branch_bias) {
  check_norm(residual, norm);
  VIT_CHECK(residual.dim() == 3 && branch.sizes() == residual.sizes() && branch.scalar_type() == torch::kBFloat16,
            ModelError, "fused LayerNorm: branch ", branch.sizes(), " ", branch.scalar_type(),
            " does not match the fp32 residual ", residual.sizes(), " as bf16");
  VIT_CHECK(!sample_scale.defined() ||
                (sample_scale.dim() == 1 && sample_scale.size(0) == residual.size(0) &&
                 sample_scale.scalar_type() == torch::kFloat32),
            ModelError, "fused LayerNorm: sample_scale must be fp32 [B]");
  VIT_CHECK(!branch_bias.defined() || (branch_bias.dim() == 1 && branch_bias.size(0) == residual.size(-1) &&
                                        branch_bias.scalar_type() == torch::kFloat32 &&
                                        branch_bias.device() == residual.device()),
            ModelError, "fused LayerNorm: branch_bias must be fp32 [", residual.size(-1), "] on ",
            residual.device().str(), ", got ", branch_bias.sizes(), " ", branch_bias.scalar_type(), " on ",
            branch_bias.defined() ? branch_bias.device().str() : "-");
  std::optional<torch::Tensor> scale, bias_in;
  if (sample_scale.defined()) scale = sample_scale;
  if (branch_bias.defined()) bias_in = branch_bias;
  auto out = AddLayerNormFn::apply(residual, branch, scale, norm->weight, norm->bias, norm->options.eps(), bias_in);
  return {out[0], out[1]};
}

}  // namespace vit::model

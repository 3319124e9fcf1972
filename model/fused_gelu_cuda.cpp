// Autograd wrapper around the GELU backward kernel with bias column sums (see fused_gelu.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "core/errors.h"
#include "model/fused_gelu.h"
#include "model/fused_gelu_kernels.h"
#include "model/kernel_ptr.h"

namespace vit::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Row blocks per column strip: about 8 blocks per SM over the whole grid, at most one per row.
int row_blocks(int64_t rows, int64_t cols) {
  const int64_t strips = (cols + kernels::kGeluBlockColumns - 1) / kernels::kGeluBlockColumns;
  const int64_t target = 8 * static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  return static_cast<int>(std::clamp<int64_t>((target + strips - 1) / strips, 1, std::max<int64_t>(rows, 1)));
}

struct GeluFn : public torch::autograd::Function<GeluFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& bias) {
    // The bias is an input for its gradient only: x already holds it.
    ctx->save_for_backward({x});
    ctx->saved_data["bias_grad"] = bias.requires_grad();
    return {at::gelu(x)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto x = ctx->get_saved_variables()[0].contiguous();
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = x.size(-1), rows = x.numel() / cols;
    auto dy = grads[0].to(x.scalar_type()).contiguous();
    if (!ctx->saved_data["bias_grad"].toBool()) return {at::gelu_backward(dy, x), torch::Tensor()};  // frozen bias
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

}  // namespace

bool fused_gelu_supported(int64_t width) { return width > 0 && width % kernels::kGeluVector == 0; }

torch::Tensor fused_gelu(const torch::Tensor& x, const torch::Tensor& bias) {
  VIT_CHECK(x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.dim() >= 1 && fused_gelu_supported(x.size(-1)) &&
                bias.defined() && bias.dim() == 1 && bias.size(0) == x.size(-1) &&
                bias.scalar_type() == torch::kFloat32 && bias.device() == x.device(),
            ModelError, "fused GELU: unsupported input ", x.sizes(), " ", x.scalar_type(), " on ", x.device().str(),
            " with bias ", bias.sizes(), " (needs bf16 [..., width] on a GPU, width a multiple of 8, an fp32 bias on the same GPU)");
  return GeluFn::apply(x.contiguous(), bias)[0];
}

}  // namespace vit::model

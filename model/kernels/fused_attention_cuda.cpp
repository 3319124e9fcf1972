// Autograd wrapper around the short-sequence attention kernels (see fused_attention.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>

#include "core/errors.h"
#include "model/kernels/attention_kernels.h"
#include "model/kernels/fused_attention.h"
#include "model/kernels/kernel_ptr.h"

namespace vit::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AttentionFn : public torch::autograd::Function<AttentionFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& qkv) {
    c10::cuda::CUDAGuard guard(qkv.device());
    const int64_t B = qkv.size(0), N = qkv.size(1), H = qkv.size(3), Dh = qkv.size(4);
    auto out = torch::empty({B, N, H * Dh}, qkv.options());
    auto lse = torch::empty({B * H, N}, qkv.options().dtype(torch::kFloat32));
    const kernels::AttentionForwardArgs args{data_or_null<const uint16_t>(qkv), data_or_null<uint16_t>(out),
                                             data_or_null<float>(lse), B, N, H, Dh,
                                             static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)))};
    VIT_CHECK(kernels::attention_forward_supported(args), ModelError, "fused attention: unsupported input ",
              qkv.sizes(), " (check fused_attention_supported() first)");
    const auto status = kernels::launch_attention_forward(args, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused attention forward: ", cudaGetErrorString(status));
    ctx->save_for_backward({qkv, out, lse});
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    VIT_CHECK(!torch::GradMode::is_enabled(), ModelError,
              "fused attention: no double backward (create_graph); set train.attention to an ATen kernel (math)");
    const auto saved = ctx->get_saved_variables();
    const auto &qkv = saved[0], &out = saved[1], &lse = saved[2];
    c10::cuda::CUDAGuard guard(qkv.device());
    auto grad_out = grads[0].to(qkv.scalar_type()).contiguous();
    auto grad_qkv = torch::empty_like(qkv);
    const kernels::AttentionBackwardArgs args{
        data_or_null<const uint16_t>(qkv), data_or_null<const uint16_t>(out), data_or_null<const float>(lse),
        data_or_null<const uint16_t>(grad_out), data_or_null<uint16_t>(grad_qkv), qkv.size(0), qkv.size(1),
        qkv.size(3), qkv.size(4), static_cast<float>(1.0 / std::sqrt(static_cast<double>(qkv.size(4))))};
    VIT_CHECK(kernels::attention_backward_supported(args), ModelError, "fused attention backward: unaligned input");
    const auto status = kernels::launch_attention_backward(args, at::cuda::getCurrentCUDAStream());
    VIT_CHECK(status == cudaSuccess, ModelError, "fused attention backward: ", cudaGetErrorString(status));
    return {grad_qkv};
  }
};

}  // namespace

bool fused_attention_supported(int64_t tokens, int64_t head_dim) {
  return kernels::attention_shape_supported(tokens, head_dim) &&
         kernels::attention_shared_bytes(tokens, head_dim) <=
             static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
}

torch::Tensor fused_attention(const torch::Tensor& qkv) {
  VIT_CHECK(qkv.is_cuda() && qkv.scalar_type() == torch::kBFloat16 && qkv.dim() == 5 && qkv.size(2) == 3 &&
                fused_attention_supported(qkv.size(1), qkv.size(4)),
            ModelError, "fused attention: unsupported input ", qkv.sizes(), " ", qkv.scalar_type(), " on ",
            qkv.device().str(), " (check fused_attention_supported() first)");
  return AttentionFn::apply(qkv.contiguous())[0];
}

}  // namespace vit::model

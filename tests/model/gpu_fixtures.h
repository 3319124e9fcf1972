// Shared by the GPU tests of the fused kernels (test_model_gpu.cpp, test_attention_gpu.cpp) and of
// the model with them (test_model_gpu_model.cpp): the skip rule, a relative error, a model
// config, weight copies, a bf16 forward and backward.
#pragma once

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/kernels/bias_sum_kernels.h"
#include "model/kernels/fused_bias_sums.h"
#include "model/kernels/fused_linear.h"
#include "model/kernels/fused_norm.h"
#include "model/vit.h"
#include "model/kernels/weight_casts.h"

namespace vit::model::testing {

#define REQUIRE_FUSED_GPU()                                                                    \
  do {                                                                                         \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the fused kernels run on a GPU"; \
    if (!fused_norm_supported(torch::zeros({1, 8}, torch::kCUDA)))                             \
      GTEST_SKIP() << "this build has no CUDA kernels";                                        \
  } while (0)

inline double max_rel(const torch::Tensor& got, const torch::Tensor& want) {
  auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

// An MLP-head model of the given shape (square images, 3 channels).
inline ModelConfig model_config(int64_t image, int64_t patch, int64_t width, int64_t depth, int64_t heads, int64_t mlp,
                         int64_t classes) {
  ModelConfig c;
  c.image_size = image;
  c.patch_size = patch;
  c.width = width;
  c.depth = depth;
  c.num_heads = heads;
  c.mlp_dim = mlp;
  c.num_classes = classes;
  c.head = "mlp";
  return c;
}

inline void copy_weights(VisionTransformer& from, VisionTransformer& to) {
  torch::NoGradGuard no_grad;
  auto src = from->named_parameters();
  for (auto& p : to->named_parameters()) p.value().copy_(src[p.key()]);
}

// The model's logits under bf16 autocast on the GPU (as the trainer runs it), as fp32; with
// `labels`, the cross-entropy's backward too (gradients accumulate in the parameters).
inline torch::Tensor bf16_logits(VisionTransformer& model, const torch::Tensor& images,
                                 const torch::Tensor& labels = {}) {
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  auto logits = model->forward(images).to(torch::kFloat32);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
  if (labels.defined()) torch::nn::functional::cross_entropy(logits, labels).backward();
  return logits.detach();
}

}  // namespace vit::model::testing

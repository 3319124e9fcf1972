// Builds without CUDA: the bias-summing kernels are absent and the model takes ATen's path.
#include "core/errors.h"
#include "model/kernels/fused_bias_sums.h"

namespace vit::model {

bool fused_gelu_supported(int64_t) { return false; }

torch::Tensor fused_gelu(const torch::Tensor&, const torch::Tensor&) {
  VIT_THROW(ModelError, "fused GELU: this build has no CUDA kernels");
}

bool fused_split_heads_supported(int64_t) { return false; }

std::vector<torch::Tensor> fused_split_heads(const torch::Tensor&, const torch::Tensor&) {
  VIT_THROW(ModelError, "fused split heads: this build has no CUDA kernels");
}

bool fused_tokens_supported(int64_t) { return false; }

torch::Tensor fused_tokens(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  VIT_THROW(ModelError, "fused token embedding: this build has no CUDA kernels");
}

}  // namespace vit::model

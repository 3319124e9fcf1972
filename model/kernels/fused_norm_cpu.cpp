// Builds without CUDA: the fused LayerNorm kernels are absent and the model takes ATen's path.
#include "core/errors.h"
#include "model/kernels/fused_norm.h"

namespace vit::model {

bool fused_norm_supported(const torch::Tensor&) { return false; }

torch::Tensor fused_layer_norm(const torch::Tensor&, const torch::nn::LayerNorm&) {
  VIT_THROW(ModelError, "fused LayerNorm: this build has no CUDA kernels");
}

std::pair<torch::Tensor, torch::Tensor> fused_add_layer_norm(const torch::Tensor&, const torch::Tensor&,
                                                             const torch::Tensor&, const torch::nn::LayerNorm&,
                                                             const torch::Tensor&) {
  VIT_THROW(ModelError, "fused LayerNorm: this build has no CUDA kernels");
}

}  // namespace vit::model

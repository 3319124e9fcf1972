// Builds without CUDA: the fused GELU backward is absent and the model takes ATen's path.
#include "core/errors.h"
#include "model/fused_gelu.h"

namespace vit::model {

bool fused_gelu_supported(int64_t) { return false; }

torch::Tensor fused_gelu(const torch::Tensor&, const torch::Tensor&) {
  VIT_THROW(ModelError, "fused GELU: this build has no CUDA kernels");
}

}  // namespace vit::model

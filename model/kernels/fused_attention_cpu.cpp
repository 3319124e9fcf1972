// Builds without CUDA: the short-sequence attention kernels are absent and the model takes
// at::scaled_dot_product_attention.
#include "core/errors.h"
#include "model/kernels/fused_attention.h"

namespace vit::model {

bool fused_attention_supported(int64_t, int64_t) { return false; }

torch::Tensor fused_attention(const torch::Tensor&) {
  VIT_THROW(ModelError, "fused attention: this build has no CUDA kernels");
}

}  // namespace vit::model

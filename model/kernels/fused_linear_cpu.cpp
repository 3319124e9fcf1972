// A build without CUDA: the fused linear backward never applies (see fused_linear.h).
#include "core/errors.h"
#include "model/kernels/fused_linear.h"

namespace vit::model {

void set_gemm_autotune(bool) {}

void force_gemm_choice_for_tests(int) {}

bool fused_linear_applies(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) { return false; }

torch::Tensor fused_linear(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, bool) {
  VIT_THROW(ModelError, "fused linear: this build has no CUDA (check fused_linear_applies() first)");
}

}  // namespace vit::model

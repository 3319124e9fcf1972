// A build without CUDA: no casts (see weight_casts.h); the Linears cast their own weights.
#include "model/kernels/weight_casts.h"

namespace vit::model {

struct WeightCasts::State {};
WeightCasts::WeightCasts() = default;
WeightCasts::~WeightCasts() = default;
bool WeightCasts::refresh(const std::vector<torch::Tensor>&) { return false; }
torch::Tensor WeightCasts::find(const torch::Tensor&) const { return {}; }

}  // namespace vit::model

#include "core/errors.h"
#include "trainer/step_graph.h"

namespace vit::train {

std::unique_ptr<StepGraph> capture_step_graph(const std::function<void()>&, const torch::Device&) {
  VIT_THROW(ConfigError, "train.cuda_graph: this build has no CUDA; set train.cuda_graph: false");
}

}  // namespace vit::train

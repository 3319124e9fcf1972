#include "core/errors.h"
#include "trainer/step_graph.h"

namespace vit::train {

void use_capture_stream(const torch::Device&) {
  VIT_THROW(ConfigError, "train.cuda_graph: this build has no CUDA; set train.cuda_graph: false");
}

std::unique_ptr<StepGraph> capture_step_graph(const std::function<void()>&, const torch::Device&) {
  VIT_THROW(ConfigError, "train.cuda_graph: this build has no CUDA; set train.cuda_graph: false");
}

}  // namespace vit::train

// run_layers / run_erase without CUDA: every tensor is on the CPU (augment_cpu.cpp). CMake
// builds this file or augment_cuda.cpp.
#include "data/augment.h"

namespace vit::data {

void run_layers(torch::Tensor& images, const torch::Tensor& plans, int num_layers, const std::array<float, 3>& fill) {
  run_layers_cpu(images, plans, num_layers, fill);
}

void run_erase(torch::Tensor& images, const torch::Tensor& plans) { run_erase_cpu(images, plans); }

}  // namespace vit::data

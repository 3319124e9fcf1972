// run_layers / run_erase with CUDA: the kernels of augment_kernels.cu for GPU tensors (on the
// current stream), the loops of augment_cpu.cpp for CPU tensors. CMake builds this file or
// augment_host.cpp.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "data/augment.h"
#include "data/augment_kernels.h"

namespace vit::data {

void run_layers(torch::Tensor& images, const torch::Tensor& plans, int num_layers, const std::array<float, 3>& fill) {
  if (!images.is_cuda()) return run_layers_cpu(images, plans, num_layers, fill);
  const auto* plan = checked_plans(images, plans);
  c10::cuda::CUDAGuard guard(images.device());
  auto stats = torch::empty({images.size(0) * static_cast<int64_t>(sizeof(aug::ImageStats))},
                            images.options().dtype(torch::kUInt8));
  auto* scratch = reinterpret_cast<aug::ImageStats*>(stats.data_ptr<uint8_t>());
  torch::Tensor in = images, out = torch::empty_like(images);
  const auto stream = at::cuda::getCurrentCUDAStream();
  for (int l = 0; l < num_layers; ++l) {
    C10_CUDA_CHECK(kernels::launch_augment_layer(in.data_ptr<float>(), out.data_ptr<float>(), images.size(0),
                                                 images.size(2), images.size(3), plan, l, scratch, fill[0], fill[1],
                                                 fill[2], stream));
    std::swap(in, out);
  }
  images = in;
}

void run_erase(torch::Tensor& images, const torch::Tensor& plans) {
  if (!images.is_cuda()) return run_erase_cpu(images, plans);
  const auto* plan = checked_plans(images, plans);
  c10::cuda::CUDAGuard guard(images.device());
  C10_CUDA_CHECK(kernels::launch_erase(images.data_ptr<float>(), images.size(0), images.size(2), images.size(3), plan,
                                       at::cuda::getCurrentCUDAStream()));
}

}  // namespace vit::data

// DeviceCopier with CUDA: copies on a side stream, ordered by an event (see device_copy.h).
#include "data/device_copy.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace vit::data {

struct DeviceCopier::Impl {
  torch::Device device;
  std::vector<torch::Tensor> tensors;
  bool pending = false;
  std::unique_ptr<at::cuda::CUDAEvent> done;
};

DeviceCopier::DeviceCopier(torch::Device device) : impl_(new Impl{device, {}, false, nullptr}) {}
DeviceCopier::~DeviceCopier() = default;

void DeviceCopier::start(const std::vector<torch::Tensor>& host) {
  impl_->tensors.clear();
  if (!impl_->device.is_cuda()) {
    for (const auto& t : host) impl_->tensors.push_back(t.to(impl_->device));
    impl_->pending = true;
    return;
  }
  c10::cuda::CUDAGuard guard(impl_->device);
  auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, impl_->device.index());
  {
    c10::cuda::CUDAStreamGuard stream_guard(side);
    for (const auto& t : host) impl_->tensors.push_back(t.to(impl_->device, /*non_blocking=*/true));
  }
  impl_->done = std::make_unique<at::cuda::CUDAEvent>();
  impl_->done->record(side);
  impl_->pending = true;
}

bool DeviceCopier::pending() const { return impl_->pending; }

std::vector<torch::Tensor> DeviceCopier::finish() {
  impl_->pending = false;
  if (impl_->device.is_cuda() && impl_->done) {
    auto current = c10::cuda::getCurrentCUDAStream(impl_->device.index());
    impl_->done->block(current);
    // The memory was allocated on the side stream; tell the allocator the current stream uses it.
    for (auto& t : impl_->tensors) t.record_stream(current);
    impl_->done.reset();
  }
  return std::move(impl_->tensors);
}

void DeviceCopier::discard() {
  impl_->pending = false;
  impl_->tensors.clear();
  impl_->done.reset();
}

}  // namespace vit::data

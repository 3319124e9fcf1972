// DeviceCopier without CUDA: the "device" is the CPU, copies are moves.
#include "data/device_copy.h"

namespace vit::data {

struct DeviceCopier::Impl {
  torch::Device device;
  std::vector<torch::Tensor> tensors;
  bool pending = false;
};

DeviceCopier::DeviceCopier(torch::Device device) : impl_(new Impl{device, {}, false}) {}
DeviceCopier::~DeviceCopier() = default;

void DeviceCopier::start(const std::vector<torch::Tensor>& host) {
  impl_->tensors.clear();
  for (const auto& t : host) impl_->tensors.push_back(t.to(impl_->device));
  impl_->pending = true;
}

bool DeviceCopier::pending() const { return impl_->pending; }

std::vector<torch::Tensor> DeviceCopier::finish() {
  impl_->pending = false;
  return std::move(impl_->tensors);
}

void DeviceCopier::discard() {
  impl_->pending = false;
  impl_->tensors.clear();
}

}  // namespace vit::data

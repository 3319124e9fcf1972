// DeviceCopier: host -> device copies of batches, overlapped with compute.
//
// On CUDA, start() issues the copies on a side stream (non_blocking, from pinned memory) and
// records an event; finish() makes the caller's current stream wait on that event and marks
// the tensors as used on it (record_stream), so the copy of batch k+1 runs while the GPU
// computes batch k. One copy is in flight at a time. On CPU both are plain moves.
// Which implementation is built is CMake's choice (device_copy_cuda.cpp / device_copy_cpu.cpp).
// Called from the training-loop thread only.
#pragma once

#include <memory>
#include <vector>

#include <torch/torch.h>

namespace vit::data {

class DeviceCopier {
 public:
  explicit DeviceCopier(torch::Device device);
  ~DeviceCopier();
  void start(const std::vector<torch::Tensor>& host);  // replaces any copy not yet finished
  bool pending() const;
  std::vector<torch::Tensor> finish();  // the tensors of the last start(), ready on the current stream
  void discard();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vit::data

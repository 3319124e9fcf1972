// Whole-step CUDA graph capture (train.cuda_graph): forward, loss, backward, gradient
// averaging, clipping and the fused optimiser step recorded once and replayed every step, so a
// small model is no longer bound by kernel-launch time on the host.
//
// Contract: `step` touches only tensors whose storage outlives the graph (static inputs the
// caller refills before each replay, parameters, gradient buckets, optimiser state, metric
// accumulators) and does no host synchronisation. The caller runs a few eager steps first
// (warm-up: cuBLAS handles, autograd state, allocator pools), on the current stream. Capture
// happens on a side stream ordered after the current one; replay() runs on the current stream.
// The CUDA implementation is compiled only in CUDA builds (step_graph_cuda.cpp);
// step_graph_cpu.cpp refuses with a ConfigError.
#pragma once

#include <functional>
#include <memory>

#include <torch/torch.h>

namespace vit::train {

class StepGraph {
 public:
  virtual ~StepGraph() = default;
  virtual void replay() = 0;
};

// Records `step` into a graph. Note: recording does not execute the step; replay() does.
std::unique_ptr<StepGraph> capture_step_graph(const std::function<void()>& step, const torch::Device& device);

}  // namespace vit::train

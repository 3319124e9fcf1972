// Whole-step CUDA graph capture (train.cuda_graph): forward, loss, backward, gradient
// averaging, clipping and the fused optimiser step recorded once and replayed every step, so a
// small model is no longer bound by kernel-launch time on the host.
//
// Contract: `step` touches only tensors whose storage outlives the graph (static inputs the
// caller refills before each replay, parameters, gradient buckets, optimiser state, metric
// accumulators) and does no host synchronisation. The caller runs a few eager steps first
// (warm-up: cuBLAS handles, autograd state, allocator pools), on the current stream. Capture
// happens on the current stream when it is not the default stream (see use_capture_stream),
// else on a side stream ordered after it; replay() runs on the current stream.
//
// Several ranks: the step's NCCL all-reduces are captured too. They start from autograd hooks
// on the gradient-accumulation nodes, which run on the stream the nodes were created on
// (GradSync creates them up front), so that stream must be the one captured: call
// use_capture_stream before building the model and its GradSync.
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

// Makes a fresh non-default stream the current stream of this thread on `device`, for the rest
// of the process, so that everything (model, gradient hooks, data, capture) runs on one stream.
void use_capture_stream(const torch::Device& device);

// Records `step` into a graph. Note: recording does not execute the step; replay() does.
std::unique_ptr<StepGraph> capture_step_graph(const std::function<void()>& step, const torch::Device& device);

}  // namespace vit::train

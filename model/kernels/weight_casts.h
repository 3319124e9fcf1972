// bf16 copies of the model's Linear weights and biases for the fused linear (fused_linear.h).
//
// Under bf16 autocast each Linear casts its fp32 weight and bias to bf16 in every forward: two
// small kernels per Linear (ViT-B/16: about 100 a step, each also a gap between the nodes of a
// CUDA graph). Here one kernel casts all of them into one buffer at the start of the forward,
// with the same rounding (to nearest even), and the fused linear takes its operands from there.
// The copies are the ones backward reads too; the next forward overwrites them without autograd
// knowing (no version bump), so a graph kept for backward across a weight update and another
// forward would silently read the new weights. The trainer runs each forward's backward before
// the next forward, as training loops do. One model's casts are for one thread at a time.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace vit::model {

class WeightCasts {
 public:
  WeightCasts();
  ~WeightCasts();
  WeightCasts(const WeightCasts&) = delete;
  WeightCasts& operator=(const WeightCasts&) = delete;

  // Casts every tensor of `params` (fp32, contiguous, 16-byte aligned, on one GPU) into the bf16
  // buffer with one kernel. The layout is built on the first call, and again when the tensors or
  // their addresses change, which cannot happen inside a CUDA graph capture. Returns false where
  // the copies cannot serve (a CPU build, tensors on the CPU, a tensor that does not qualify, a
  // new layout during a capture; the last two are logged once); nothing is cast then, and find()
  // finds nothing until a refresh succeeds.
  bool refresh(const std::vector<torch::Tensor>& params);

  // p's bf16 copy from the last successful refresh(): p one of its tensors, or a view of one with
  // the same first element and number of elements (the patch embedding's weight as a matrix),
  // shaped as p. Otherwise undefined.
  torch::Tensor find(const torch::Tensor& p) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// While alive, fused_linear on this thread takes its bf16 weight and bias from `casts` where it
// holds them; null: from nowhere (each Linear casts its own), also inside an outer guard. Nests.
class UseWeightCasts {
 public:
  explicit UseWeightCasts(const WeightCasts* casts);
  ~UseWeightCasts();
  UseWeightCasts(const UseWeightCasts&) = delete;
  UseWeightCasts& operator=(const UseWeightCasts&) = delete;

 private:
  const WeightCasts* previous_;
};

// The casts in use on this thread, or null.
const WeightCasts* active_weight_casts();

}  // namespace vit::model

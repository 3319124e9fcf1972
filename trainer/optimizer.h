// The optimiser step: clip by global norm, then fused AdamW or SGD (ATen's _fused_adamw_ /
// _fused_sgd_, the kernels torch.optim uses with fused=True) over every parameter at once, or
// Muon (orthogonalised momentum) for the hidden matrices with AdamW for the rest.
//
// Everything stays on the device: the global norm, the non-finite flag and the skipped-step
// count are tensors, read by the host only when metrics are logged. A non-finite gradient
// norm skips the update inside the fused kernel (found_inf), so no host sync per step.
// Parameter groups are chosen by name: no weight decay for biases, norms, cls_token, pos_embed.
#pragma once

#include <memory>
#include <string>

#include <torch/torch.h>

#include "model/safetensors.h"

namespace vit::train {

// The YAML section `optim` (trainer/config.h loads it; docs/config.md lists the keys).
struct OptimConfig {
  std::string name = "adamw";  // adamw | muon | sgd
  double lr = 1e-3;            // peak learning rate (after warmup)
  double weight_decay = 0.05;  // not applied to biases, norms, cls_token, pos_embed
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double momentum = 0.9;  // sgd
  bool nesterov = false;  // sgd
  double muon_momentum = 0.95;  // muon: the hidden matrices' momentum (the rest takes AdamW's betas)
  bool muon_nesterov = true;
  int64_t muon_ns_steps = 5;  // Newton-Schulz iterations
  double clip_grad_norm = 1.0;  // 0 disables clipping by global norm
};
// Range and choice checks of the section alone; messages name `optim.<key>` (ConfigError).
void validate(const OptimConfig& config);

class Optimizer {
 public:
  // `params` with their names; step() takes each param's .grad() as it is then (views into the
  // gradient synchroniser's buckets, or autograd's own tensors when it keeps none). `flat_grads`,
  // when given, are buffers that hold every gradient and zeros elsewhere (the buckets): the
  // norm and the clipping then run over a few large tensors instead of one per parameter.
  Optimizer(const OptimConfig& config, const model::NamedTensors& params,
            std::vector<torch::Tensor> flat_grads = {});
  ~Optimizer();

  // The learning rate of the next step(): written into a device tensor, outside any CUDA graph.
  void set_lr(double lr);
  // Clips (when configured) and updates. Returns the global gradient norm before clipping as a
  // 0-dim float tensor on the parameters' device. No host synchronisation: capturable.
  torch::Tensor step();

  torch::Tensor skipped_steps() const { return skipped_; }  // int64 0-dim, on the device

  // Moments and step counters under stable names, for checkpoints.
  model::NamedTensors state() const;
  void load_state(const model::NamedTensors& state, const std::string& source);

 private:
  struct Rule;  // the algorithm (optim.name) and its state per parameter group (optimizer.cpp)
  OptimConfig config_;
  std::unique_ptr<Rule> rule_;
  std::vector<torch::Tensor> flat_grads_;  // GradSync's bucket buffers, when it keeps them
  std::vector<torch::Tensor> all_grads_;   // what norm and clipping run over (this step)
  double lr_value_ = 0.0;
  torch::Tensor lr_;         // 0-dim float on the device (CUDA: graph-safe learning rate)
  torch::Tensor found_inf_;  // 0-dim float: 1 when the gradient norm is not finite
  torch::Tensor skipped_;
  bool first_step_ = true;   // SGD's momentum starts from the first gradient
};

// The values optim.name takes (one update rule each, optimizer.cpp).
std::vector<std::string> optimizer_names();
// True when `key` (an optim.* key) belongs to another algorithm than `optimizer` alone, so a
// resumed run that keeps the optimiser may change it.
bool key_unused_by(const std::string& optimizer, const std::string& key);

// True for names that take no weight decay (biases, norms, cls_token, pos_embed).
bool is_no_decay(const std::string& name);
// True for the matrices Muon updates: every 2-D weight but the classifier's (head.weight), so the
// blocks' qkv, proj, fc1, fc2 and the MLP head's hidden layer; the patch embedding is a 4-D conv.
bool is_hidden_matrix(const std::string& name, const torch::Tensor& param);

}  // namespace vit::train

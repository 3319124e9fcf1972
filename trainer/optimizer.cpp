#include "trainer/optimizer.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::train {

bool is_no_decay(const std::string& name) {
  return ends_with(name, ".bias") || name.find("norm") != std::string::npos || name == "cls_token" ||
         name == "pos_embed";
}

Optimizer::Optimizer(const OptimConfig& config, const model::NamedTensors& params,
                     std::vector<torch::Tensor> flat_grads)
    : config_(config) {
  VIT_CHECK(!params.empty(), ConfigError, "optimizer: the model has no parameters");
  groups_.resize(2);
  groups_[0].weight_decay = config.weight_decay;
  groups_[1].weight_decay = 0.0;
  auto device = params.front().second.device();
  for (const auto& [name, p] : params) {
    Group& g = groups_[is_no_decay(name) ? 1 : 0];
    g.names.push_back(name);
    g.params.push_back(p);
    g.grads.emplace_back();  // fetched at every step: .grad() may be a new tensor each step
    if (config.name == "adamw") {
      g.exp_avgs.push_back(torch::zeros_like(p));
      g.exp_avg_sqs.push_back(torch::zeros_like(p));
      g.steps.push_back(torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(device)));
    } else if (config.momentum > 0) {  // plain SGD keeps no buffers (the fused kernel wants none)
      g.momentum.push_back(torch::zeros_like(p));
    }
  }
  flat_grads_ = std::move(flat_grads);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  lr_ = torch::zeros({}, f32);
  found_inf_ = torch::zeros({}, f32);
  skipped_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
}

void Optimizer::set_lr(double lr) {
  lr_value_ = lr;
  lr_.fill_(lr);
}

torch::Tensor Optimizer::step() {
  const double lr = lr_value_;
  torch::NoGradGuard no_grad;
  // The gradients of this step: views into GradSync's buckets (the same tensors every step) or
  // autograd's own. A parameter without one (unused this step) takes a zero gradient.
  all_grads_ = flat_grads_;
  for (auto& g : groups_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      g.grads[i] = g.params[i].grad().defined() ? g.params[i].grad() : torch::zeros_like(g.params[i]);
      if (flat_grads_.empty()) all_grads_.push_back(g.grads[i]);
    }
  }
  // Global norm over every gradient, computed on the device.
  auto norms = torch::_foreach_norm(all_grads_, 2);
  auto total_norm = torch::linalg_vector_norm(torch::stack(norms), 2);
  // found_inf: the fused kernels skip the whole update when it is non-zero.
  found_inf_.copy_(total_norm.isfinite().logical_not().to(torch::kFloat32));
  skipped_.add_(found_inf_.to(torch::kInt64));
  if (config_.clip_grad_norm > 0) {
    auto coef = (config_.clip_grad_norm / (total_norm + 1e-6)).clamp_max(1.0);
    torch::_foreach_mul_(all_grads_, coef);
  }
  const bool cpu = lr_.device().is_cpu();
  for (auto& g : groups_) {
    if (g.params.empty()) continue;
    if (config_.name == "adamw") {
      torch::_foreach_add_(g.steps, 1.0);
      if (cpu) {
        at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, {}, g.steps, lr, config_.beta1,
                          config_.beta2, g.weight_decay, config_.eps, false, false, std::nullopt, found_inf_);
      } else {
        at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, {}, g.steps, lr_, config_.beta1,
                          config_.beta2, g.weight_decay, config_.eps, false, false, std::nullopt, found_inf_);
      }
      // A skipped step does not count (as torch.optim does with found_inf).
      torch::_foreach_sub_(g.steps, std::vector<torch::Tensor>(g.steps.size(), found_inf_));
    } else {
      if (cpu) {
        at::_fused_sgd_(g.params, g.grads, g.momentum, g.weight_decay, config_.momentum, lr, 0.0, config_.nesterov,
                        false, sgd_first_step_, std::nullopt, found_inf_);
      } else {
        at::_fused_sgd_(g.params, g.grads, g.momentum, g.weight_decay, config_.momentum, lr_, 0.0, config_.nesterov,
                        false, sgd_first_step_, std::nullopt, found_inf_);
      }
    }
  }
  sgd_first_step_ = false;
  // Hold no gradient past the step: without buckets, GradSync::zero_grad() frees them.
  for (auto& g : groups_) std::fill(g.grads.begin(), g.grads.end(), torch::Tensor());
  all_grads_.clear();
  return total_norm;
}

model::NamedTensors Optimizer::state() const {
  model::NamedTensors out;
  for (const auto& g : groups_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (config_.name == "adamw") {
        out.emplace_back("exp_avg." + g.names[i], g.exp_avgs[i]);
        out.emplace_back("exp_avg_sq." + g.names[i], g.exp_avg_sqs[i]);
        out.emplace_back("step." + g.names[i], g.steps[i]);
      } else if (!g.momentum.empty()) {
        out.emplace_back("momentum." + g.names[i], g.momentum[i]);
      }
    }
  }
  out.emplace_back("skipped_steps", skipped_);
  out.emplace_back("sgd_first_step", torch::tensor(sgd_first_step_ ? 1 : 0));
  return out;
}

void Optimizer::load_state(const model::NamedTensors& state, const std::string& source) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  auto fetch = [&](const std::string& name, torch::Tensor& into) {
    auto it = by_name.find(name);
    VIT_CHECK(it != by_name.end(), CheckpointError, "'", source, "': optimizer state lacks '", name,
              "' (was it written with another optim.name or model?)");
    VIT_CHECK(it->second.sizes().equals(into.sizes()), CheckpointError, "'", source, "': optimizer state '", name,
              "' has another shape than the model's parameter");
    torch::NoGradGuard no_grad;
    into.copy_(it->second);
  };
  for (auto& g : groups_) {
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (config_.name == "adamw") {
        fetch("exp_avg." + g.names[i], g.exp_avgs[i]);
        fetch("exp_avg_sq." + g.names[i], g.exp_avg_sqs[i]);
        fetch("step." + g.names[i], g.steps[i]);
      } else if (!g.momentum.empty()) {
        fetch("momentum." + g.names[i], g.momentum[i]);
      }
    }
  }
  fetch("skipped_steps", skipped_);
  auto first = by_name.find("sgd_first_step");
  if (first != by_name.end()) sgd_first_step_ = first->second.item<int64_t>() != 0;
}

void validate(const OptimConfig& c) {
  VIT_CHECK(c.name == "adamw" || c.name == "sgd", ConfigError, "optim.name: must be adamw or sgd, got '", c.name, "'");
  VIT_CHECK(c.lr > 0 && std::isfinite(c.lr), ConfigError, "optim.lr: must be a positive number, got ", c.lr);
  VIT_CHECK(c.momentum >= 0 && c.momentum < 1, ConfigError, "optim.momentum: must be in [0, 1), got ", c.momentum);
  VIT_CHECK(c.eps > 0, ConfigError, "optim.eps: must be positive, got ", c.eps);
  VIT_CHECK(!(c.name == "sgd" && c.nesterov && c.momentum == 0), ConfigError,
            "optim.nesterov: needs optim.momentum > 0 (as torch.optim.SGD)");
  VIT_CHECK(c.weight_decay >= 0, ConfigError, "optim.weight_decay: must be >= 0");
  VIT_CHECK(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1, ConfigError,
            "optim.beta1: betas must be in [0, 1)");
  VIT_CHECK(c.clip_grad_norm >= 0, ConfigError, "optim.clip_grad_norm: must be >= 0 (0 disables)");
}

}  // namespace vit::train

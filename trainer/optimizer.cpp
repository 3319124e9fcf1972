#include "trainer/optimizer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <variant>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::train {

bool is_no_decay(const std::string& name) {
  return ends_with(name, ".bias") || name.find("norm") != std::string::npos || name == "cls_token" ||
         name == "pos_embed";
}

namespace {

// The learning rate as the fused kernels take it: a number on the CPU, a 0-dim device tensor on
// a GPU (written outside the CUDA graph, read inside it). Chosen once, in the constructor.
using LearningRate = std::variant<double, torch::Tensor>;

// One optimiser algorithm: the state it keeps per parameter (slots, saved as
// "<slot>.<parameter name>") and its fused update of one parameter group.
class UpdateRule {
 public:
  struct Group {
    std::vector<torch::Tensor> params, grads;
    std::vector<std::vector<torch::Tensor>> slots;  // [slot][parameter]
    double weight_decay = 0.0;
  };
  virtual ~UpdateRule() = default;
  virtual std::vector<std::string> slot_names() const = 0;
  virtual torch::Tensor new_slot(size_t slot, const torch::Tensor& param) const = 0;
  virtual void update(Group& g, const LearningRate& lr, const torch::Tensor& found_inf, bool first_step) const = 0;
};

class AdamW final : public UpdateRule {
 public:
  explicit AdamW(const OptimConfig& c) : c_(c) {}
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq", "step"}; }
  torch::Tensor new_slot(size_t slot, const torch::Tensor& p) const override {
    if (slot < 2) return torch::zeros_like(p);
    return torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(p.device()));
  }
  void update(Group& g, const LearningRate& lr, const torch::Tensor& found_inf, bool) const override {
    auto& steps = g.slots[2];
    torch::_foreach_add_(steps, 1.0);
    std::visit(
        [&](const auto& rate) {
          at::_fused_adamw_(g.params, g.grads, g.slots[0], g.slots[1], {}, steps, rate, c_.beta1, c_.beta2,
                            g.weight_decay, c_.eps, false, false, std::nullopt, found_inf);
        },
        lr);
    // A skipped step does not count (as torch.optim does with found_inf).
    torch::_foreach_sub_(steps, std::vector<torch::Tensor>(steps.size(), found_inf));
  }

 private:
  OptimConfig c_;
};

class Sgd final : public UpdateRule {
 public:
  explicit Sgd(const OptimConfig& c) : c_(c) {}
  // Plain SGD keeps no buffers (the fused kernel wants none).
  std::vector<std::string> slot_names() const override {
    return c_.momentum > 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{};
  }
  torch::Tensor new_slot(size_t, const torch::Tensor& p) const override { return torch::zeros_like(p); }
  void update(Group& g, const LearningRate& lr, const torch::Tensor& found_inf, bool first_step) const override {
    const std::vector<torch::Tensor> none;
    std::visit(
        [&](const auto& rate) {
          at::_fused_sgd_(g.params, g.grads, g.slots.empty() ? none : g.slots[0], g.weight_decay, c_.momentum, rate,
                          0.0, c_.nesterov, false, first_step, std::nullopt, found_inf);
        },
        lr);
  }

 private:
  OptimConfig c_;
};

// The algorithms by optim.name, with the optim.* keys only they read. Adding one: a class above
// and a line here.
struct Algorithm {
  std::function<std::unique_ptr<UpdateRule>(const OptimConfig&)> make;
  std::vector<std::string> own_keys;
};

const std::map<std::string, Algorithm>& algorithms() {
  static const std::map<std::string, Algorithm> all = {
      {"adamw", {[](const OptimConfig& c) { return std::make_unique<AdamW>(c); },
                 {"optim.beta1", "optim.beta2", "optim.eps"}}},
      {"sgd", {[](const OptimConfig& c) { return std::make_unique<Sgd>(c); }, {"optim.momentum", "optim.nesterov"}}},
  };
  return all;
}

}  // namespace

struct Optimizer::Rule {
  std::unique_ptr<UpdateRule> rule;
  std::vector<std::string> slot_names;
  std::vector<UpdateRule::Group> groups;  // [0]: with weight decay, [1]: without
  std::vector<std::vector<std::string>> names;  // parameter names per group
};

std::vector<std::string> optimizer_names() {
  std::vector<std::string> out;
  for (const auto& [name, algorithm] : algorithms()) out.push_back(name);
  return out;
}

bool key_unused_by(const std::string& optimizer, const std::string& key) {
  bool someones = false;
  for (const auto& [name, algorithm] : algorithms()) {
    const bool own = std::find(algorithm.own_keys.begin(), algorithm.own_keys.end(), key) != algorithm.own_keys.end();
    if (own && name == optimizer) return false;
    someones = someones || own;
  }
  return someones;
}

Optimizer::Optimizer(const OptimConfig& config, const model::NamedTensors& params,
                     std::vector<torch::Tensor> flat_grads)
    : config_(config), rule_(std::make_unique<Rule>()) {
  VIT_CHECK(!params.empty(), ConfigError, "optimizer: the model has no parameters");
  validate(config);
  rule_->rule = algorithms().at(config.name).make(config);
  rule_->slot_names = rule_->rule->slot_names();
  rule_->groups.resize(2);
  rule_->names.resize(2);
  rule_->groups[0].weight_decay = config.weight_decay;
  rule_->groups[1].weight_decay = 0.0;
  for (auto& g : rule_->groups) g.slots.resize(rule_->slot_names.size());
  auto device = params.front().second.device();
  for (const auto& [name, p] : params) {
    const size_t k = is_no_decay(name) ? 1 : 0;
    auto& g = rule_->groups[k];
    rule_->names[k].push_back(name);
    g.params.push_back(p);
    g.grads.emplace_back();  // fetched at every step: .grad() may be a new tensor each step
    for (size_t s = 0; s < g.slots.size(); ++s) g.slots[s].push_back(rule_->rule->new_slot(s, p));
  }
  flat_grads_ = std::move(flat_grads);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  lr_ = torch::zeros({}, f32);
  found_inf_ = torch::zeros({}, f32);
  skipped_ = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
}

Optimizer::~Optimizer() = default;

void Optimizer::set_lr(double lr) {
  lr_value_ = lr;
  lr_.fill_(lr);
}

torch::Tensor Optimizer::step() {
  torch::NoGradGuard no_grad;
  // The gradients of this step: views into GradSync's buckets (the same tensors every step) or
  // autograd's own. A parameter without one (unused this step) takes a zero gradient.
  all_grads_ = flat_grads_;
  for (auto& g : rule_->groups) {
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
  const LearningRate lr = lr_.device().is_cpu() ? LearningRate(lr_value_) : LearningRate(lr_);
  for (auto& g : rule_->groups) {
    if (!g.params.empty()) rule_->rule->update(g, lr, found_inf_, first_step_);
  }
  first_step_ = false;
  // Hold no gradient past the step: without buckets, GradSync::zero_grad() frees them.
  for (auto& g : rule_->groups) std::fill(g.grads.begin(), g.grads.end(), torch::Tensor());
  all_grads_.clear();
  return total_norm;
}

model::NamedTensors Optimizer::state() const {
  model::NamedTensors out;
  for (size_t k = 0; k < rule_->groups.size(); ++k) {
    const auto& g = rule_->groups[k];
    for (size_t i = 0; i < g.params.size(); ++i) {
      for (size_t s = 0; s < g.slots.size(); ++s) {
        out.emplace_back(rule_->slot_names[s] + "." + rule_->names[k][i], g.slots[s][i]);
      }
    }
  }
  out.emplace_back("skipped_steps", skipped_);
  out.emplace_back("sgd_first_step", torch::tensor(first_step_ ? 1 : 0));
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
  for (size_t k = 0; k < rule_->groups.size(); ++k) {
    auto& g = rule_->groups[k];
    for (size_t i = 0; i < g.params.size(); ++i) {
      for (size_t s = 0; s < g.slots.size(); ++s) fetch(rule_->slot_names[s] + "." + rule_->names[k][i], g.slots[s][i]);
    }
  }
  fetch("skipped_steps", skipped_);
  auto first = by_name.find("sgd_first_step");
  if (first != by_name.end()) first_step_ = first->second.item<int64_t>() != 0;
}

void validate(const OptimConfig& c) {
  VIT_CHECK(algorithms().count(c.name) > 0, ConfigError, "optim.name: must be ", join(optimizer_names(), " or "),
            ", got '", c.name, "'");
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

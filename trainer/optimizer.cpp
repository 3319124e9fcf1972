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

bool is_hidden_matrix(const std::string& name, const torch::Tensor& param) {
  return param.dim() == 2 && !starts_with(name, "head.");
}

namespace {

// The parameter groups: with weight decay, without (is_no_decay), and Muon's hidden matrices.
enum GroupKind : size_t { kDecay = 0, kNoDecay = 1, kMatrix = 2, kGroupKinds = 3 };

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
  // True when the hidden matrices (is_hidden_matrix) form a group of their own (kMatrix).
  virtual bool takes_matrices() const { return false; }
  virtual std::vector<std::string> slot_names(GroupKind kind) const = 0;
  virtual torch::Tensor new_slot(GroupKind kind, size_t slot, const torch::Tensor& param) const = 0;
  virtual void update(GroupKind kind, Group& g, const LearningRate& lr, const torch::Tensor& found_inf,
                      bool first_step) const = 0;
};

class AdamW final : public UpdateRule {
 public:
  explicit AdamW(const OptimConfig& c) : c_(c) {}
  std::vector<std::string> slot_names(GroupKind) const override { return {"exp_avg", "exp_avg_sq", "step"}; }
  torch::Tensor new_slot(GroupKind, size_t slot, const torch::Tensor& p) const override {
    if (slot < 2) return torch::zeros_like(p);
    return torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(p.device()));
  }
  void update(GroupKind, Group& g, const LearningRate& lr, const torch::Tensor& found_inf, bool) const override {
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
  std::vector<std::string> slot_names(GroupKind) const override {
    return c_.momentum > 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{};
  }
  torch::Tensor new_slot(GroupKind, size_t, const torch::Tensor& p) const override { return torch::zeros_like(p); }
  void update(GroupKind, Group& g, const LearningRate& lr, const torch::Tensor& found_inf,
              bool first_step) const override {
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

// Muon (Jordan et al. 2024) for the hidden matrices, AdamW for every other parameter. Per matrix
// W of R x C, as torch.optim.Muon with adjust_lr_fn="match_rms_adamw" (Moonlight, Liu et al. 2025):
//   buf = buf + (1 - mu) (g - buf);  u = nesterov ? g + mu (buf - g) : buf
//   O = Newton-Schulz(u), about U V^T of u's SVD (5 quintic iterations on u / |u|_F)
//   W = W (1 - lr wd) - lr 0.2 sqrt(max(R, C)) O
// The 0.2 sqrt(max(R, C)) gives O the RMS of an AdamW update, so optim.lr and optim.weight_decay
// serve both groups. Matrices of one shape (each block's qkv, proj, fc1, fc2) are orthogonalised
// together, in batched products: bf16 on a GPU (as torch.optim.Muon), float32 on the CPU.
class Muon final : public UpdateRule {
 public:
  explicit Muon(const OptimConfig& c) : c_(c), adamw_(c) {}
  bool takes_matrices() const override { return true; }
  std::vector<std::string> slot_names(GroupKind kind) const override {
    return kind == kMatrix ? std::vector<std::string>{"muon_momentum"} : adamw_.slot_names(kind);
  }
  torch::Tensor new_slot(GroupKind kind, size_t slot, const torch::Tensor& p) const override {
    return kind == kMatrix ? torch::zeros_like(p) : adamw_.new_slot(kind, slot, p);
  }
  void update(GroupKind kind, Group& g, const LearningRate& lr, const torch::Tensor& found_inf,
              bool first_step) const override {
    if (kind != kMatrix) return adamw_.update(kind, g, lr, found_inf, first_step);
    const auto device = g.params.front().device();
    auto rate = std::holds_alternative<torch::Tensor>(lr)
                    ? std::get<torch::Tensor>(lr)
                    : torch::tensor(std::get<double>(lr), torch::TensorOptions(torch::kFloat32).device(device));
    // A skipped step (non-finite gradient norm) moves neither the buffers nor the weights.
    const auto skip = found_inf > 0;
    rate = rate * (1 - found_inf);
    std::map<std::vector<int64_t>, std::vector<size_t>> by_shape;
    for (size_t i = 0; i < g.params.size(); ++i) by_shape[g.params[i].sizes().vec()].push_back(i);
    for (const auto& [shape, members] : by_shape) {
      std::vector<torch::Tensor> params, grads, bufs;
      for (size_t i : members) {
        params.push_back(g.params[i]);
        grads.push_back(g.grads[i]);
        bufs.push_back(g.slots[0][i]);
      }
      auto grad = torch::where(skip, 0.0, torch::stack(grads));
      auto buf = torch::stack(bufs);
      buf = torch::where(skip, buf, buf.lerp(grad, 1 - c_.muon_momentum));
      torch::_foreach_copy_(bufs, buf.unbind(0));
      auto ortho = newton_schulz(c_.muon_nesterov ? grad.lerp(buf, c_.muon_momentum) : buf).to(torch::kFloat32);
      const double scale = 0.2 * std::sqrt(static_cast<double>(std::max(shape[0], shape[1])));
      torch::_foreach_mul_(params, 1 - rate * g.weight_decay);
      torch::_foreach_add_(params, (ortho * (rate * -scale)).unbind(0));
    }
  }

 private:
  // Newton-Schulz's quintic iteration towards the orthogonal factor of each matrix of `u`
  // ([n, R, C]), with the coefficients of Jordan et al. (as torch.optim.Muon's defaults).
  torch::Tensor newton_schulz(const torch::Tensor& u) const {
    constexpr double a = 3.4445, b = -4.7750, c = 2.0315;
    const bool tall = u.size(1) > u.size(2);
    auto x = u.to(u.is_cuda() ? torch::kBFloat16 : torch::kFloat32);
    if (tall) x = x.transpose(1, 2);
    x = x / x.norm(2, {1, 2}, /*keepdim=*/true).clamp_min(1e-7);
    for (int64_t k = 0; k < c_.muon_ns_steps; ++k) {
      auto gram = torch::bmm(x, x.transpose(1, 2));
      x = torch::baddbmm(x, torch::baddbmm(gram, gram, gram, b, c), x, a);
    }
    return tall ? x.transpose(1, 2) : x;
  }

  OptimConfig c_;
  AdamW adamw_;
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
      {"muon", {[](const OptimConfig& c) { return std::make_unique<Muon>(c); },
                {"optim.beta1", "optim.beta2", "optim.eps", "optim.muon_momentum", "optim.muon_nesterov",
                 "optim.muon_ns_steps"}}},
      {"sgd", {[](const OptimConfig& c) { return std::make_unique<Sgd>(c); }, {"optim.momentum", "optim.nesterov"}}},
  };
  return all;
}

}  // namespace

struct Optimizer::Rule {
  std::unique_ptr<UpdateRule> rule;
  std::vector<UpdateRule::Group> groups;              // by GroupKind
  std::vector<std::vector<std::string>> slot_names;   // per group
  std::vector<std::vector<std::string>> names;        // parameter names per group
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
  rule_->groups.resize(kGroupKinds);
  rule_->names.resize(kGroupKinds);
  for (size_t k = 0; k < kGroupKinds; ++k) {
    rule_->slot_names.push_back(rule_->rule->slot_names(static_cast<GroupKind>(k)));
    rule_->groups[k].slots.resize(rule_->slot_names[k].size());
    rule_->groups[k].weight_decay = k == kNoDecay ? 0.0 : config.weight_decay;
  }
  auto device = params.front().second.device();
  for (const auto& [name, p] : params) {
    const GroupKind k = is_no_decay(name)                                             ? kNoDecay
                        : rule_->rule->takes_matrices() && is_hidden_matrix(name, p) ? kMatrix
                                                                                      : kDecay;
    auto& g = rule_->groups[k];
    rule_->names[k].push_back(name);
    g.params.push_back(p);
    g.grads.emplace_back();  // fetched at every step: .grad() may be a new tensor each step
    for (size_t s = 0; s < g.slots.size(); ++s) g.slots[s].push_back(rule_->rule->new_slot(k, s, p));
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
  for (size_t k = 0; k < kGroupKinds; ++k) {
    auto& g = rule_->groups[k];
    if (!g.params.empty()) rule_->rule->update(static_cast<GroupKind>(k), g, lr, found_inf_, first_step_);
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
        out.emplace_back(rule_->slot_names[k][s] + "." + rule_->names[k][i], g.slots[s][i]);
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
      for (size_t s = 0; s < g.slots.size(); ++s) fetch(rule_->slot_names[k][s] + "." + rule_->names[k][i], g.slots[s][i]);
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
  VIT_CHECK(c.muon_momentum >= 0 && c.muon_momentum < 1, ConfigError, "optim.muon_momentum: must be in [0, 1), got ",
            c.muon_momentum);
  VIT_CHECK(c.muon_ns_steps >= 1 && c.muon_ns_steps <= 20, ConfigError,
            "optim.muon_ns_steps: must be in [1, 20], got ", c.muon_ns_steps);
}

}  // namespace vit::train

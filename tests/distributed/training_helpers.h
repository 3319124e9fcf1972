// The equivalence experiment shared by the MPI and GPU suites: N ranks with micro-batch B,
// synchronised by GradSync, must end with the parameters that one process reaches with batch
// N x B. Every rank computes that one-process reference itself, on the full batch, with plain
// autograd (no GradSync, no communicator): an independent expectation.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/consistency.h"
#include "distributed/grad_sync.h"
#include "model/vit.h"

namespace vit::dist::testing {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

// A model under test: its parameters and a forward function.
struct TestModel {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  NamedParams named() const {
    NamedParams out;
    for (const auto& item : module->named_parameters()) out.emplace_back(item.key(), item.value());
    return out;
  }
  std::vector<torch::Tensor> params() const { return module->parameters(); }
};

inline TestModel make_mlp(uint64_t seed, torch::Device device) {
  torch::manual_seed(seed);
  auto net = torch::nn::Sequential(torch::nn::Linear(6, 16), torch::nn::Tanh(), torch::nn::Linear(16, 16),
                                   torch::nn::Tanh(), torch::nn::Linear(16, 16), torch::nn::Tanh(),
                                   torch::nn::Linear(16, 3));
  net->to(device);
  return TestModel{net.ptr(), [net](const torch::Tensor& x) mutable { return net->forward(x); }};
}

inline TestModel make_tiny_vit(uint64_t seed, torch::Device device) {
  torch::manual_seed(seed);
  vit::model::ModelConfig config;
  config.image_size = 8;
  config.patch_size = 4;
  config.width = 16;
  config.depth = 2;
  config.num_heads = 2;
  config.mlp_dim = 32;
  config.num_classes = 3;
  auto vit = vit::model::VisionTransformer(config);
  vit->to(device);
  return TestModel{vit.ptr(), [vit](const torch::Tensor& x) mutable { return vit->forward(x); }};
}

struct Batch {
  torch::Tensor x, y;  // the global batch: N x B samples
};

// The same batches on every rank (fixed seed), `input_shape` per sample.
inline std::vector<Batch> make_batches(int64_t steps, int64_t global_batch, std::vector<int64_t> input_shape,
                                       torch::Device device) {
  auto gen = at::detail::createCPUGenerator(1234);
  std::vector<Batch> batches;
  std::vector<int64_t> shape = {global_batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  for (int64_t s = 0; s < steps; ++s) {
    auto x = at::randn(shape, gen, torch::kFloat);
    auto y = at::randint(0, 3, {global_batch}, gen, torch::kLong);
    batches.push_back(Batch{x.to(device), y.to(device)});
  }
  return batches;
}

inline void sgd_step(const std::vector<torch::Tensor>& params, double lr) {
  torch::NoGradGuard no_grad;
  for (auto p : params) p.sub_(p.grad(), lr);
}

// One process, full batches.
inline void train_reference(TestModel& model, const std::vector<Batch>& batches, double lr) {
  for (const auto& batch : batches) {
    for (auto p : model.params()) p.mutable_grad() = torch::Tensor();
    torch::nn::functional::cross_entropy(model.forward(batch.x), batch.y).backward();
    sgd_step(model.params(), lr);
  }
}

// This rank's shard of each batch, in `micro_batches` pieces; the last one synchronises.
inline void train_distributed(TestModel& model, GradSync& sync, int rank, int world_size,
                              const std::vector<Batch>& batches, int64_t micro_batches, double lr) {
  for (const auto& batch : batches) {
    const int64_t b = batch.x.size(0) / world_size;  // micro-batch B per rank
    const int64_t piece = b / micro_batches;
    for (int64_t m = 0; m < micro_batches; ++m) {
      sync.set_sync(m == micro_batches - 1);
      const int64_t begin = rank * b + m * piece;
      auto x = batch.x.narrow(0, begin, piece);
      auto y = batch.y.narrow(0, begin, piece);
      (torch::nn::functional::cross_entropy(model.forward(x), y) / static_cast<double>(micro_batches)).backward();
    }
    sync.finish();
    sgd_step(model.params(), lr);
    sync.zero_grad();
  }
}

// max |a - b| / max |b| over all parameters.
inline double max_relative_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, (a[i] - b[i]).abs().max().item<double>());
    scale = std::max(scale, b[i].abs().max().item<double>());
  }
  return diff / scale;
}

}  // namespace vit::dist::testing

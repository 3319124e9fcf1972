// GradSync in one process: bucket plan (reverse order, size and dtype splits), grads as views
// into the flat buffers (also after backward and zero_grad), and the hook machinery, observed
// through a fake two-rank communicator that records each all-reduce (its "peer" holds the same
// gradients, so an average changes nothing).
#include <gtest/gtest.h>

#include <stdexcept>

#include "distributed/communicator.h"
#include "distributed/grad_sync.h"

namespace vit::dist {
namespace {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

class DoneWork : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

class RecordingComm : public Communicator {
 public:
  struct Call {
    int64_t numel;
    torch::ScalarType dtype;
    ReduceOp op;
    bool first_layer_grad_was_zero;  // was backward still running when this bucket started?
  };
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  torch::Device device() const override { return torch::kCPU; }
  std::string backend_name() const override { return "recording"; }
  std::shared_ptr<Work> allreduce(torch::Tensor& t, const AllreduceOptions& o) override {
    const bool zero = watched.defined() && watched.grad().defined() && watched.grad().abs().sum().item<double>() == 0.0;
    calls.push_back(Call{t.numel(), t.scalar_type(), o.op, zero});
    return std::make_shared<DoneWork>();
  }
  std::shared_ptr<Work> broadcast(torch::Tensor&, const BroadcastOptions&) override { return std::make_shared<DoneWork>(); }
  std::shared_ptr<Work> allgather(std::vector<torch::Tensor>&, const torch::Tensor&) override { return std::make_shared<DoneWork>(); }
  std::shared_ptr<Work> barrier() override { return std::make_shared<DoneWork>(); }
  void abort() override {}

  std::vector<Call> calls;
  torch::Tensor watched;  // the first layer's weight
};

// Three layers; names in registration order.
struct Net {
  torch::Tensor w1 = torch::randn({8, 4}).requires_grad_();   // 32 floats = 128 B
  torch::Tensor b1 = torch::randn({8}).requires_grad_();      // 8 floats = 32 B
  torch::Tensor w2 = torch::randn({8, 8}).requires_grad_();   // 64 floats = 256 B
  torch::Tensor b2 = torch::randn({8}).requires_grad_();
  torch::Tensor w3 = torch::randn({2, 8}).requires_grad_();   // 16 floats = 64 B
  torch::Tensor unused = torch::randn({3}).requires_grad_();  // never in forward
  NamedParams named() const {
    return {{"w1", w1}, {"b1", b1}, {"w2", w2}, {"b2", b2}, {"w3", w3}, {"unused", unused}};
  }
  torch::Tensor loss(const torch::Tensor& x) const {
    auto h = torch::tanh(torch::matmul(x, w1.t()) + b1);
    h = torch::tanh(torch::matmul(h, w2.t()) + b2);
    return torch::matmul(h, w3.t()).pow(2).mean();
  }
};

DistConfig small_buckets(double bytes) {
  DistConfig c;
  c.bucket_mb = bytes / (1024.0 * 1024.0);
  return c;
}

TEST(GradSyncPlan, ReverseOrderSplitBySizeAndDtype) {
  const std::vector<torch::Tensor> params = {
      torch::zeros({32}), torch::zeros({8}), torch::zeros({64}), torch::zeros({8}),
      torch::zeros({16}, torch::kDouble), torch::zeros({3})};
  // 160 bytes per bucket: floats are 4 bytes, offsets aligned to 16 bytes (3 floats -> 16 B).
  const auto plan = GradSync::plan_buckets(params, 160);
  const std::vector<std::vector<size_t>> expected = {{5}, {4}, {3}, {2}, {1, 0}};
  EXPECT_EQ(plan, expected);
  // One huge bucket still splits by dtype.
  const auto one = GradSync::plan_buckets(params, int64_t(1) << 30);
  const std::vector<std::vector<size_t>> by_dtype = {{5}, {4}, {3, 2, 1, 0}};
  EXPECT_EQ(one, by_dtype);
}

// With 100-byte buckets Net gives {unused, w3}, {b2}, {w2}, {b1}, {w1} (4 without unused).
TEST(GradSyncViews, GradsAreViewsBeforeAndAfterBackwardAndZeroGrad) {
  torch::manual_seed(0);
  Net net;
  auto comm = make_communicator(DistConfig{}, LaunchInfo{}, torch::kCPU);  // world size 1
  GradSync sync(net.named(), comm, small_buckets(100));
  EXPECT_EQ(sync.num_buckets(), 5);
  const auto buffers = sync.bucket_buffers();
  auto in_some_buffer = [&](const torch::Tensor& g) {
    for (const auto& b : buffers) {
      const auto* begin = b.data_ptr<float>();
      const auto* p = g.data_ptr<float>();
      if (p >= begin && p + g.numel() <= begin + b.numel()) return true;
    }
    return false;
  };
  for (const auto& [name, p] : net.named()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(in_some_buffer(p.grad())) << name;
    EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f) << name;
  }
  const std::vector<void*> before = {net.w1.grad().data_ptr(), net.w3.grad().data_ptr()};
  net.loss(torch::randn({5, 4})).backward();
  sync.finish();
  EXPECT_EQ(net.w1.grad().data_ptr(), before[0]);
  EXPECT_EQ(net.w3.grad().data_ptr(), before[1]);
  EXPECT_GT(net.w1.grad().abs().sum().item<float>(), 0.0f);
  sync.zero_grad();
  EXPECT_EQ(net.w1.grad().data_ptr(), before[0]);
  for (const auto& b : buffers) EXPECT_EQ(b.abs().sum().item<float>(), 0.0f);
}

// One process, keep_buffers = false: no buckets; grads are autograd's, freed by zero_grad().
TEST(GradSyncViews, WithoutBuffersGradsAreFreedBetweenSteps) {
  torch::manual_seed(3);
  Net net;
  auto comm = make_communicator(DistConfig{}, LaunchInfo{}, torch::kCPU);  // world size 1
  GradSync sync(net.named(), comm, small_buckets(100), /*keep_buffers=*/false);
  EXPECT_EQ(sync.num_buckets(), 0);
  EXPECT_TRUE(sync.bucket_buffers().empty());
  for (const auto& [name, p] : net.named()) EXPECT_FALSE(p.grad().defined()) << name;
  auto x = torch::randn({5, 4});
  net.loss(x).backward();
  sync.finish();
  const auto first = net.w1.grad().clone();
  EXPECT_GT(first.abs().sum().item<float>(), 0.0f);
  sync.zero_grad();
  for (const auto& [name, p] : net.named()) EXPECT_FALSE(p.grad().defined()) << name;
  // Accumulation over two micro-batches of the same input: twice the gradient.
  sync.set_sync(false);
  net.loss(x).backward();
  sync.set_sync(true);
  net.loss(x).backward();
  sync.finish();
  EXPECT_TRUE(torch::allclose(net.w1.grad(), 2 * first));
}

TEST(GradSyncViews, ReplacedGradIsCopiedBackIntoItsView) {
  torch::manual_seed(1);
  Net net;
  auto comm = make_communicator(DistConfig{}, LaunchInfo{}, torch::kCPU);
  GradSync sync(net.named(), comm, small_buckets(100));
  void* view = net.w2.grad().data_ptr();
  net.w2.mutable_grad() = torch::Tensor();  // what Module::zero_grad() (set_to_none) does
  net.loss(torch::randn({5, 4})).backward();
  const auto expected = net.w2.grad().clone();
  sync.finish();
  EXPECT_EQ(net.w2.grad().data_ptr(), view);
  EXPECT_TRUE(torch::equal(net.w2.grad(), expected));
}

TEST(GradSyncHooks, BucketsStartDuringBackwardInOrder) {
  torch::manual_seed(2);
  Net net;
  auto comm = std::make_shared<RecordingComm>();
  comm->watched = net.w1;
  GradSync sync(net.named(), comm, small_buckets(100));
  ASSERT_EQ(sync.num_buckets(), 5);
  net.loss(torch::randn({5, 4})).backward();
  // Hooks started every bucket whose gradients arrived, in index order: the unused parameter's
  // bucket (index 0) holds the others back until finish().
  EXPECT_EQ(comm->calls.size(), 0u);
  sync.finish();
  ASSERT_EQ(comm->calls.size(), 5u);
  for (const auto& call : comm->calls) EXPECT_EQ(call.op, ReduceOp::kAvg);
}

TEST(GradSyncHooks, OverlapWithBackwardAndAccumulation) {
  torch::manual_seed(3);
  Net net;
  auto named = net.named();
  named.pop_back();  // without the unused parameter
  auto comm = std::make_shared<RecordingComm>();
  comm->watched = net.w1;
  GradSync sync(named, comm, small_buckets(100));
  ASSERT_EQ(sync.num_buckets(), 4);
  const auto x = torch::randn({5, 4});

  sync.set_sync(false);  // micro-batch 1 of 2: accumulate only
  net.loss(x).backward();
  EXPECT_EQ(comm->calls.size(), 0u);
  EXPECT_THROW(sync.finish(), std::logic_error);
  const auto once = net.w1.grad().clone();

  sync.zero_grad();  // start over: micro-batch 1 then 2, the last one synchronised
  sync.set_sync(false);
  net.loss(x).backward();
  sync.set_sync(true);
  comm->watched = torch::Tensor();
  net.loss(x).backward();
  ASSERT_EQ(comm->calls.size(), 4u);  // all started by hooks, before finish()
  sync.finish();
  EXPECT_EQ(comm->calls.size(), 4u);
  EXPECT_TRUE(torch::allclose(net.w1.grad(), 2 * once));

  // The last layer's bucket starts while the first layer's gradient is still zero.
  sync.zero_grad();
  comm->calls.clear();
  comm->watched = net.w1;
  net.loss(x).backward();
  sync.finish();
  ASSERT_EQ(comm->calls.size(), 4u);
  EXPECT_TRUE(comm->calls.front().first_layer_grad_was_zero);
  EXPECT_FALSE(comm->calls.back().first_layer_grad_was_zero);
}

TEST(GradSyncHooks, SecondBackwardInOneSyncStepIsAnError) {
  torch::manual_seed(4);
  Net net;
  auto named = net.named();
  named.pop_back();
  auto comm = std::make_shared<RecordingComm>();
  GradSync sync(named, comm, small_buckets(1 << 20));
  const auto x = torch::randn({5, 4});
  net.loss(x).backward();
  EXPECT_THROW(net.loss(x).backward(), std::logic_error);
}

TEST(GradSyncHooks, Bf16CompressionSendsBf16AndKeepsFp32Grads) {
  torch::manual_seed(5);
  Net net;
  auto named = net.named();
  named.pop_back();
  auto comm = std::make_shared<RecordingComm>();
  auto config = small_buckets(1 << 20);
  config.compress_bf16 = true;
  GradSync sync(named, comm, config);
  net.loss(torch::randn({5, 4})).backward();
  const auto exact = net.w2.grad().clone();
  sync.finish();
  ASSERT_EQ(comm->calls.size(), 1u);
  EXPECT_EQ(comm->calls[0].dtype, torch::kBFloat16);
  EXPECT_EQ(net.w2.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(net.w2.grad(), exact, 1e-2, 1e-3));  // rounded through bf16
}

}  // namespace
}  // namespace vit::dist

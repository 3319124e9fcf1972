// The communicator of a job of one process: every collective is the identity and completes at
// once, so single-process training pays nothing for the distributed code path (no MPI traffic,
// no extra streams). allgather still copies, because its output must not alias its input.
#include <torch/torch.h>

#include "core/errors.h"
#include "distributed/detail.h"

namespace vit::dist {
namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
  bool is_completed() override { return true; }
};

class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(torch::Device device) : device_(device) {}

  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  torch::Device device() const override { return device_; }
  std::string backend_name() const override { return "local"; }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& options) override {
    VIT_CHECK(options.op != ReduceOp::kAvg || tensor.is_floating_point(), CommError,
              "allreduce avg needs a floating-point tensor, got ", tensor.scalar_type());
    return done();
  }
  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& options) override {
    VIT_CHECK(options.root == 0, CommError, "broadcast root ", options.root,
              " does not exist in a job of 1 process");
    return done();
  }
  std::shared_ptr<Work> allgather(std::vector<torch::Tensor>& out,
                                  const torch::Tensor& input) override {
    torch::NoGradGuard no_grad;
    if (out.empty()) {
      out.push_back(input.clone());
    } else {
      VIT_CHECK(out.size() == 1, CommError, "allgather: out holds ", out.size(),
                " tensors, expected world_size 1");
      out[0].copy_(input);
    }
    return done();
  }
  std::shared_ptr<Work> barrier() override { return done(); }
  void abort() override {}

 private:
  static std::shared_ptr<Work> done() {
    static auto work = std::make_shared<DoneWork>();
    return work;
  }
  torch::Device device_;
};

}  // namespace

namespace detail {
std::shared_ptr<Communicator> make_local_communicator(torch::Device device) {
  return std::make_shared<LocalCommunicator>(device);
}
}  // namespace detail

}  // namespace vit::dist

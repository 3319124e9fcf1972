// Global metrics: small all-reduces of host numbers through a device tensor of the
// communicator (NCCL needs device memory), read back at once.
#include "distributed/metrics.h"

namespace vit::dist {
namespace {

torch::Tensor reduce(Communicator& comm, const std::vector<double>& values, ReduceOp op) {
  auto t = torch::tensor(values, torch::kDouble).to(comm.device());
  comm.allreduce(t, {op})->wait();
  return t.cpu();
}

}  // namespace

std::vector<double> sum_across_ranks(Communicator& comm, const std::vector<double>& values) {
  const auto t = reduce(comm, values, ReduceOp::kSum);
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

double max_across_ranks(Communicator& comm, double value) {
  return reduce(comm, {value}, ReduceOp::kMax).item<double>();
}

bool any_rank(Communicator& comm, bool flag) { return max_across_ranks(comm, flag ? 1.0 : 0.0) > 0.0; }

bool any_nonfinite(Communicator& comm, const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  auto flag = torch::isfinite(values.detach()).logical_not().any().to(torch::kDouble).reshape({1});
  flag = flag.to(comm.device());
  comm.allreduce(flag, {ReduceOp::kMax})->wait();
  return flag.cpu().item<double>() > 0.0;
}

double global_mean(Communicator& comm, double local_sum, double local_count) {
  const auto sums = sum_across_ranks(comm, {local_sum, local_count});
  return sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
}

Throughput global_throughput(Communicator& comm, int64_t local_images, double local_seconds) {
  const double images = sum_across_ranks(comm, {static_cast<double>(local_images)})[0];
  const double seconds = max_across_ranks(comm, local_seconds);
  Throughput out;
  if (seconds > 0.0) {
    out.images_per_s = images / seconds;
    out.images_per_s_per_rank = out.images_per_s / comm.world_size();
  }
  return out;
}

EvalCounts sum_eval_counts(Communicator& comm, const EvalCounts& local) {
  const auto sums = sum_across_ranks(
      comm, {static_cast<double>(local.correct), static_cast<double>(local.total), local.loss_sum});
  return EvalCounts{static_cast<int64_t>(sums[0] + 0.5), static_cast<int64_t>(sums[1] + 0.5), sums[2]};
}

}  // namespace vit::dist

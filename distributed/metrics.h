// Global numbers of a data-parallel job: sums and maxima over ranks, the job-wide mean loss,
// throughput of the whole job and per GPU, summed evaluation counts, and the all-reduced
// non-finite flag. Each function is one small collective (every rank calls it, in the same
// order) and returns on the host, so it syncs with the device: call it every N steps, not
// every step. Accumulate per-step numbers on the device in between (a tensor you allreduce
// yourself works too).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "distributed/communicator.h"

namespace vit::dist {

// Element-wise sums over ranks (fp64).
std::vector<double> sum_across_ranks(Communicator& comm, const std::vector<double>& values);
double max_across_ranks(Communicator& comm, double value);

// True on every rank when any rank passes true.
bool any_rank(Communicator& comm, bool flag);

// True on every rank when any element of `values` (e.g. this rank's loss) is NaN or Inf on any
// rank. One all-reduced flag: all ranks then skip the step together (distributed.on_nonfinite
// skip) or stop together (stop). For gradients no flag is needed: Note [Gradient buckets].
bool any_nonfinite(Communicator& comm, const torch::Tensor& values);

// The job-wide mean: sum over ranks of `local_sum` / sum over ranks of `local_count` (the
// logged train loss is the mean over every rank's samples, not the mean of rank means).
double global_mean(Communicator& comm, double local_sum, double local_count);

struct Throughput {
  double images_per_s = 0.0;          // the whole job: all ranks' images / slowest rank's time
  double images_per_s_per_rank = 0.0;  // per GPU (per process)
};
Throughput global_throughput(Communicator& comm, int64_t local_images, double local_seconds);

// Distributed evaluation: each rank evaluates its shard (padding masked out), then the counts
// are summed; accuracy = correct / total over the whole set.
struct EvalCounts {
  int64_t correct = 0;
  int64_t total = 0;
  double loss_sum = 0.0;
};
EvalCounts sum_eval_counts(Communicator& comm, const EvalCounts& local);

}  // namespace vit::dist

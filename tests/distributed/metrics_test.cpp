// Global metrics: closed forms in rank and world size.
#include <gtest/gtest.h>

#include <limits>

#include "distributed/metrics.h"
#include "mpi_env.h"

namespace vit::dist::testing {
namespace {

TEST(Metrics, GlobalMeanWeighsEverySample) {
  auto comm = make_test_comm();
  const int n = comm->world_size();
  // Rank r saw r + 1 samples, each with loss r: the mean over samples, not over ranks.
  const double r = comm->rank();
  double num = 0, den = 0;
  for (int k = 0; k < n; ++k) {
    num += k * (k + 1.0);
    den += k + 1.0;
  }
  EXPECT_DOUBLE_EQ(global_mean(*comm, r * (r + 1), r + 1), num / den);
}

TEST(Metrics, NonfiniteLossOnOneRankIsSeenByAll) {
  auto comm = make_test_comm();
  auto loss = torch::full({1}, 0.5);
  EXPECT_FALSE(any_nonfinite(*comm, loss));
  if (comm->rank() == comm->world_size() - 1) loss.fill_(std::numeric_limits<double>::quiet_NaN());
  EXPECT_TRUE(any_nonfinite(*comm, loss));
  EXPECT_TRUE(any_rank(*comm, comm->rank() == 0));
  EXPECT_FALSE(any_rank(*comm, false));
}

TEST(Metrics, ThroughputAndEvalCounts) {
  auto comm = make_test_comm();
  const int n = comm->world_size();
  const auto t = global_throughput(*comm, 100, 1.0 + comm->rank());  // the slowest rank takes n s
  EXPECT_DOUBLE_EQ(t.images_per_s, 100.0 * n / n);
  EXPECT_DOUBLE_EQ(t.images_per_s_per_rank, 100.0 / n);
  const auto counts = sum_eval_counts(*comm, EvalCounts{comm->rank(), 10, 0.5});
  EXPECT_EQ(counts.correct, n * (n - 1) / 2);
  EXPECT_EQ(counts.total, 10 * n);
  EXPECT_DOUBLE_EQ(counts.loss_sum, 0.5 * n);
  EXPECT_EQ(sum_across_ranks(*comm, {1.0, 2.0}), (std::vector<double>{1.0 * n, 2.0 * n}));
  EXPECT_DOUBLE_EQ(max_across_ranks(*comm, comm->rank()), n - 1.0);
}

}  // namespace
}  // namespace vit::dist::testing

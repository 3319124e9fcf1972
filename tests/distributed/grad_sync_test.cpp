// GradSync across ranks (MPI backend): after k SGD steps, N ranks with micro-batch B hold the
// parameters one process reaches with batch N x B (fp32: 1e-5 relative), with several buckets
// forced by a tiny bucket size, with and without gradient accumulation, for an MLP and a tiny
// ViT; bf16 compression within bf16 tolerance; parameter checksums equal afterwards.
#include <gtest/gtest.h>

#include "distributed/consistency.h"
#include "distributed/grad_sync.h"
#include "mpi_env.h"
#include "training_helpers.h"

namespace vit::dist::testing {
namespace {

constexpr int64_t kSteps = 3;
constexpr int64_t kMicroBatch = 4;  // B per rank
constexpr double kLr = 0.2;

struct Case {
  bool vit = false;
  int64_t micro_batches = 1;
  double bucket_bytes = 1024;
  bool compress_bf16 = false;
};

// Returns the max relative difference to the one-process reference.
double run_equivalence(const Case& c, int64_t* num_buckets) {
  auto config = test_config();
  config.bucket_mb = c.bucket_bytes / (1024.0 * 1024.0);
  config.compress_bf16 = c.compress_bf16;
  auto comm = make_test_comm(config);
  const int n = comm->world_size();
  const auto make = c.vit ? make_tiny_vit : make_mlp;
  const std::vector<int64_t> sample = c.vit ? std::vector<int64_t>{3, 8, 8} : std::vector<int64_t>{6};
  const auto batches = make_batches(kSteps, n * kMicroBatch, sample, torch::kCPU);

  auto reference = make(7, torch::kCPU);
  train_reference(reference, batches, kLr);

  auto model = make(7 + 100 * comm->rank(), torch::kCPU);  // differs per rank until the broadcast
  broadcast_parameters(*comm, model.params());
  GradSync sync(model.named(), comm, config);
  *num_buckets = sync.num_buckets();
  train_distributed(model, sync, comm->rank(), n, batches, c.micro_batches, kLr);
  check_parameters_in_sync(*comm, model.params(), kSteps);  // throws if replicas differ
  return max_relative_difference(model.params(), reference.params());
}

TEST(GradSync, MatchesOneProcessWithLargeBatch) {
  int64_t buckets = 0;
  EXPECT_LT(run_equivalence(Case{}, &buckets), 1e-5);
  EXPECT_GE(buckets, 4);
}

TEST(GradSync, MatchesWithGradientAccumulation) {
  int64_t buckets = 0;
  EXPECT_LT(run_equivalence(Case{false, 2}, &buckets), 1e-5);
  EXPECT_GE(buckets, 4);
}

TEST(GradSync, MatchesWithOneBucket) {
  int64_t buckets = 0;
  EXPECT_LT(run_equivalence(Case{false, 1, 1 << 20}, &buckets), 1e-5);
  EXPECT_EQ(buckets, 1);
}

TEST(GradSync, TinyVitMatchesWithManyBucketsAndAccumulation) {
  int64_t buckets = 0;
  EXPECT_LT(run_equivalence(Case{true, 2, 2048}, &buckets), 1e-5);
  EXPECT_GE(buckets, 5);
}

TEST(GradSync, Bf16CompressionWithinBf16Tolerance) {
  int64_t buckets = 0;
  const double diff = run_equivalence(Case{false, 1, 1024, true}, &buckets);
  EXPECT_LT(diff, 2e-2);
  EXPECT_GT(diff, 0.0);  // it really went through bf16
}

// A parameter used on some ranks only: its bucket starts from a hook there and from finish()
// elsewhere; the order of collectives stays the same and the averaged gradient is right.
TEST(GradSync, ParameterUnusedOnSomeRanks) {
  auto config = test_config();
  config.bucket_mb = 16.0 / (1024 * 1024);  // one 4-float parameter per bucket
  auto comm = make_test_comm(config);
  auto used = torch::ones({4}).requires_grad_();
  auto sometimes = torch::ones({4}).requires_grad_();
  GradSync sync({{"sometimes", sometimes}, {"used", used}}, comm, config);
  ASSERT_EQ(sync.num_buckets(), 2);
  auto loss = used.sum() * (comm->rank() + 1);
  if (comm->rank() % 2 == 0) loss = loss + sometimes.sum();
  loss.backward();
  sync.finish();
  const int n = comm->world_size();
  const double used_expected = (n + 1) / 2.0;                      // mean of 1..n
  const double sometimes_expected = ((n + 1) / 2) / static_cast<double>(n);  // even ranks / n
  EXPECT_TRUE(torch::allclose(used.grad(), torch::full({4}, used_expected)));
  EXPECT_TRUE(torch::allclose(sometimes.grad(), torch::full({4}, sometimes_expected)));
}

}  // namespace
}  // namespace vit::dist::testing

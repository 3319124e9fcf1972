// ShardedSampler and ShardPlanner: closed-form positions, tail rules, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data/random.h"
#include "data/sampler.h"

namespace vit::data {
namespace {

TEST(Sampler, TrainDropsTailAndSplitsDisjointly) {
  // N = 10, world 2, B = 2: floor(10 / 4) = 2 steps; 8 of 10 samples used per epoch.
  std::set<int64_t> seen;
  for (int r = 0; r < 2; ++r) {
    ShardedSampler s({10, r, 2, 2, 7, true});
    EXPECT_EQ(s.steps_per_epoch(), 2);
    for (int64_t step = 0; step < 2; ++step) {
      for (int64_t i : s.indices(3, step)) {
        EXPECT_GE(i, 0);
        EXPECT_LT(i, 10);
        EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " twice";
      }
    }
  }
  EXPECT_EQ(seen.size(), 8u);
}

TEST(Sampler, TrainEpochHoldsWholeOptimiserSteps) {
  // World 2, B = 2, 3 micro-batches per optimiser step: a global batch of 12. N = 30 gives
  // floor(30 / 12) = 2 optimiser steps = 6 micro-batch steps and 24 samples, where micro-batches
  // alone would give floor(30 / 4) = 7 (and a step straddling two epochs); N = 26 gives 6 too.
  for (int64_t n : {26, 30}) {
    std::set<int64_t> seen;
    for (int r = 0; r < 2; ++r) {
      ShardedSampler s({n, r, 2, 2, 7, true, 3});
      EXPECT_EQ(s.steps_per_epoch(), 6) << n;
      for (int64_t step = 0; step < s.steps_per_epoch(); ++step)
        for (int64_t i : s.indices(0, step)) EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " twice";
    }
    EXPECT_EQ(seen.size(), 24u) << n;
  }
  ShardedSampler eval({30, 0, 2, 2, 7, false, 3});  // evaluation ignores it: every sample once
  EXPECT_EQ(eval.steps_per_epoch(), 8);
}

TEST(Sampler, PositionsFollowTheDocumentedFormula) {
  // p = (step * world + rank) * B + j indexes the epoch permutation.
  ShardedSampler s({30, 1, 3, 2, 5, true});
  const auto order = s.epoch_order(4);
  EXPECT_EQ(s.indices(4, 2), (std::vector<int64_t>{order[(2 * 3 + 1) * 2], order[(2 * 3 + 1) * 2 + 1]}));
}

TEST(Sampler, EvalPadsWithMinusOneAndCoversEverySampleOnce) {
  // N = 10, world 2, B = 2 -> ceil(10 / 4) = 3 steps; step 2: rank 0 gets 8, 9; rank 1 pads.
  ShardedSampler r0({10, 0, 2, 2, 0, false}), r1({10, 1, 2, 2, 0, false});
  EXPECT_EQ(r0.steps_per_epoch(), 3);
  EXPECT_EQ(r0.indices(0, 0), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(r1.indices(0, 0), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r0.indices(0, 2), (std::vector<int64_t>{8, 9}));
  EXPECT_EQ(r1.indices(0, 2), (std::vector<int64_t>{-1, -1}));
}

TEST(Sampler, OrderChangesWithEpochAndRepeatsWithSeed) {
  ShardedSampler a({100, 0, 1, 10, 42, true}), b({100, 0, 1, 10, 42, true}), c({100, 0, 1, 10, 43, true});
  EXPECT_EQ(a.epoch_order(0), b.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  EXPECT_NE(a.epoch_order(0), c.epoch_order(0));
  auto sorted = a.epoch_order(5);
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[i], i);
}

TEST(Random, PermutationIsUniformEnough) {
  // Over 20,000 permutations of 4, each of the 4 values lands first about 1/4 of the time.
  std::vector<int> first(4, 0);
  for (uint64_t k = 0; k < 20000; ++k) ++first[permutation(4, mix_key({k}))[0]];
  for (int c : first) EXPECT_NEAR(c / 20000.0, 0.25, 0.02);
}

TEST(Random, BetaHasTheRightMean) {
  Rng rng(1);
  double sum = 0;
  for (int i = 0; i < 20000; ++i) sum += rng.beta(2.0, 6.0);
  EXPECT_NEAR(sum / 20000, 0.25, 0.01);  // a / (a + b)
}

}  // namespace
}  // namespace vit::data

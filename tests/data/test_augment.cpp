// Augmentation keyed by position, repeated augmentation, and the layers' arithmetic, against
// closed-form expectations (the ops themselves are compared with torchvision in
// tests/python/test_augment_ops.py).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>

#include "core/errors.h"
#include "data/augment.h"
#include "data/loader.h"
#include "data/sampler.h"

namespace vit::data {
namespace {

TEST(RepeatedAugment, EverySampleKTimesPerEpochOnAnyNumberOfRanks) {
  // N = 60, k = 3, global batch 12: floor(180 / 12) = 15 steps, 4 distinct samples per step, so
  // every sample 3 times per epoch; the sample at each global position is the same for 1, 2, 3
  // ranks (and for 1 rank accumulating 3 micro-batches), and the copies of a sample sit 4
  // positions apart.
  const int64_t n = 60, k = 3;
  std::map<int64_t, int64_t> reference;  // position -> sample
  for (const auto& [world, micro, accumulation] : std::vector<std::tuple<int, int64_t, int64_t>>{
           {1, 12, 1}, {2, 6, 1}, {3, 4, 1}, {1, 4, 3}}) {
    std::map<int64_t, int64_t> count;
    for (int r = 0; r < world; ++r) {
      ShardedSampler s({n, r, world, micro, 5, true, accumulation, k});
      ASSERT_EQ(s.steps_per_epoch(), 15 * accumulation);
      for (int64_t step = 0; step < s.steps_per_epoch(); ++step) {
        const auto ids = s.indices(2, step);
        for (int64_t j = 0; j < micro; ++j) {
          ++count[ids[j]];
          const int64_t p = first_position(step, r, world, micro) + j;
          if (world == 1 && accumulation == 1) reference[p] = ids[j];
          EXPECT_EQ(reference.at(p), ids[j]) << "position " << p << ", world " << world;
          if (p % 12 >= 4) {
            EXPECT_EQ(reference.at(p - 4), ids[j]) << "copies 4 positions apart";
          }
        }
      }
    }
    ASSERT_EQ(count.size(), static_cast<size_t>(n));
    for (const auto& [sample, times] : count) EXPECT_EQ(times, k) << "sample " << sample << ", world " << world;
  }
  // Another epoch draws another order.
  ShardedSampler s({n, 0, 1, 12, 5, true, 1, k});
  EXPECT_NE(s.indices(2, 0), s.indices(3, 0));
  // k must divide the global batch.
  EXPECT_THROW(ShardedSampler({n, 0, 1, 8, 5, true, 1, 3}), ConfigError);
}

DataConfig strong_config() {
  DataConfig c;
  c.dataset = "synthetic";
  c.synthetic_train_size = 48;
  c.synthetic_image_size = 16;
  c.crop_padding = 2;
  c.rand_augment = "rand-m9-mstd0.5-inc1";
  c.random_erase_prob = 0.5;
  c.repeated_augment = 2;
  return c;
}

// The images and targets of one epoch, by position in the epoch's global order.
struct Seen {
  std::map<int64_t, torch::Tensor> images, targets;
};

Seen one_epoch(const DataConfig& config, int world, int64_t micro, int64_t accumulation) {
  Seen seen;
  for (int r = 0; r < world; ++r) {
    LoaderOptions o;
    o.rank = r;
    o.world_size = world;
    o.micro_batch_size = micro;
    o.micro_batches_per_step = accumulation;
    o.seed = 3;
    o.image_height = o.image_width = 16;
    auto loader = make_loader(config, o);
    loader->seek({1, 0});
    for (int64_t step = 0; step < loader->steps_per_epoch(); ++step) {
      const Batch b = loader->next();
      for (int64_t j = 0; j < micro; ++j) {
        const int64_t p = first_position(step, r, world, micro) + j;
        seen.images[p] = b.images[j].clone();
        if (b.targets.defined()) seen.targets[p] = b.targets[j].clone();
      }
    }
  }
  return seen;
}

TEST(Augment, EverySampleIsAugmentedTheSameOnAnyNumberOfRanks) {
  // Per-sample steps (crop, flip, RandAugment, erasing) are keyed by position: bit-identical for
  // a global batch of 12 on 1, 2 or 3 ranks, or 1 rank accumulating.
  DataConfig config = strong_config();
  const Seen one = one_epoch(config, 1, 12, 1);
  ASSERT_EQ(one.images.size(), 96u);  // 2 x 48 positions
  for (const auto& [world, micro, accumulation] :
       std::vector<std::tuple<int, int64_t, int64_t>>{{2, 6, 1}, {3, 4, 1}, {1, 4, 3}}) {
    const Seen other = one_epoch(config, world, micro, accumulation);
    ASSERT_EQ(other.images.size(), one.images.size());
    for (const auto& [p, image] : one.images)
      ASSERT_TRUE(torch::equal(image, other.images.at(p))) << "position " << p << ", world " << world;
  }
  // Mixing pairs the samples of a micro-batch: the same wherever the micro-batch size is kept.
  config.mixup_alpha = 0.8;
  config.cutmix_alpha = 1.0;
  const Seen mixed = one_epoch(config, 3, 4, 1), accumulated = one_epoch(config, 1, 4, 3);
  for (const auto& [p, image] : mixed.images) {
    ASSERT_TRUE(torch::equal(image, accumulated.images.at(p))) << "position " << p;
    ASSERT_TRUE(torch::equal(mixed.targets.at(p), accumulated.targets.at(p))) << "position " << p;
  }
}

TEST(Augment, ResumeMidEpochGivesTheSameBatches) {
  const DataConfig config = strong_config();
  LoaderOptions o;
  o.micro_batch_size = 8;
  o.seed = 9;
  o.image_height = o.image_width = 16;
  auto a = make_loader(config, o), b = make_loader(config, o);
  a->seek({2, 0});
  for (int i = 0; i < 3; ++i) a->next();
  b->seek({2, 3});
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(torch::equal(a->next().images, b->next().images)) << "batch " << i;
}

TEST(Augment, PlansAreDeterministicAndVaryWithTheKey) {
  DataConfig config = strong_config();
  LoaderOptions o;
  const AugmentPolicy policy(config, o);
  int differing = 0;
  for (uint64_t key = 0; key < 50; ++key) {
    const auto p = draw_plan(policy, key), q = draw_plan(policy, key), r = draw_plan(policy, key + 1000);
    EXPECT_EQ(std::memcmp(&p, &q, sizeof p), 0);
    differing += std::memcmp(&p, &r, sizeof p) != 0;
  }
  EXPECT_GT(differing, 40);
  o.train = false;  // evaluation: nothing drawn
  const auto e = draw_plan(AugmentPolicy(config, o), 7);
  EXPECT_EQ(e.layers[0].op, aug::kNone);
  EXPECT_EQ(e.erase_height, 0);
}

TEST(Augment, ErasedBoxIsStandardNormalNoiseAndTheRestUntouched) {
  auto images = torch::full({1, 3, 32, 32}, 0.25f);
  aug::SamplePlan plan;
  plan.erase_top = 3;
  plan.erase_left = 5;
  plan.erase_height = 20;
  plan.erase_width = 24;
  plan.noise_key_lo = 17;
  auto bytes = torch::from_blob(&plan, {static_cast<int64_t>(sizeof plan)}, torch::kUInt8).clone();
  run_erase(images, bytes);
  using torch::indexing::Slice;
  auto box = images.index({0, Slice(), Slice(3, 23), Slice(5, 29)});
  EXPECT_NEAR(box.mean().item<double>(), 0.0, 0.06);  // 1,440 values
  EXPECT_NEAR(box.std().item<double>(), 1.0, 0.06);
  images.index_put_({0, Slice(), Slice(3, 23), Slice(5, 29)}, 0.25f);
  EXPECT_TRUE(torch::equal(images, torch::full({1, 3, 32, 32}, 0.25f)));
}

TEST(Augment, ComposedLayersRunInOrder) {
  // Invert then posterize to 1 bit: 255 - x, then keep the top bit. Against the closed form.
  auto images = torch::arange(0, 3 * 16, torch::kFloat32).mul_(5).view({1, 3, 4, 4}).contiguous();
  const auto original = images.clone();
  aug::SamplePlan plan;
  plan.layers[0].op = aug::kInvert;
  plan.layers[1].op = aug::kPosterize;
  plan.layers[1].a = 1;
  auto bytes = torch::from_blob(&plan, {static_cast<int64_t>(sizeof plan)}, torch::kUInt8).clone();
  run_layers(images, bytes, 2, {0, 0, 0});
  EXPECT_TRUE(torch::equal(images, (255 - original).ge(128).to(torch::kFloat32) * 128));
}

}  // namespace
}  // namespace vit::data

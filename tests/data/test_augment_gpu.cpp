// The augmentation kernels on a GPU against the CPU loops (the same arithmetic of
// augment_ops.h): every RandAugment layer bit for bit, erasing noise within float rounding, a
// whole resident batch within float rounding. Skips without a GPU.
#include <gtest/gtest.h>

#include "data/augment.h"
#include "data/loader.h"

namespace vit::data {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the augmentation kernels run on a GPU"

torch::Tensor plans_for(const AugmentPolicy& policy, int64_t batch, uint64_t first_key) {
  auto bytes = torch::empty({batch * static_cast<int64_t>(sizeof(aug::SamplePlan))}, torch::kUInt8);
  auto* plan = reinterpret_cast<aug::SamplePlan*>(bytes.data_ptr<uint8_t>());
  for (int64_t i = 0; i < batch; ++i) plan[i] = draw_plan(policy, first_key + static_cast<uint64_t>(i));
  return bytes;
}

TEST(AugmentGpu, LayersEqualTheCpuBitForBit) {
  SKIP_WITHOUT_GPU();
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{32, 32}, {24, 40}, {224, 224}}) {
    DataConfig config;
    config.rand_augment = "rand-m9-mstd0.5-inc1-n4-p1";  // every layer applied: all ops, many magnitudes
    LoaderOptions options;
    options.image_height = h;
    options.image_width = w;
    const AugmentPolicy policy(config, options);
    const int64_t batch = h > 100 ? 16 : 256;
    auto images = torch::randint(0, 256, {batch, 3, h, w}, torch::kFloat32);
    auto plans = plans_for(policy, batch, 100);
    auto cpu = images.clone(), gpu = images.cuda();
    run_layers(cpu, plans, 4, policy.fill);
    run_layers(gpu, plans.cuda(), 4, policy.fill);
    auto diff = (gpu.cpu() - cpu).abs();
    EXPECT_EQ(diff.max().item<float>(), 0.f) << h << "x" << w << ": " << diff.gt(0).sum().item<int64_t>()
                                             << " pixels differ";
  }
}

TEST(AugmentGpu, ErasingEqualsTheCpuWithinFloatRounding) {
  SKIP_WITHOUT_GPU();
  DataConfig config;
  config.random_erase_prob = 1.0;
  LoaderOptions options;
  const AugmentPolicy policy(config, options);
  auto plans = plans_for(policy, 128, 5);
  auto cpu = torch::zeros({128, 3, 32, 32}), gpu = cpu.cuda();
  run_erase(cpu, plans);
  run_erase(gpu, plans.cuda());
  EXPECT_TRUE(torch::allclose(gpu.cpu(), cpu, 1e-5, 1e-5));
  EXPECT_GT(cpu.ne(0).sum().item<int64_t>(), 128 * 3 * 20);
}

TEST(AugmentGpu, ResidentBatchesEqualTheCpuWithinFloatRounding) {
  SKIP_WITHOUT_GPU();
  DataConfig config;
  config.synthetic_train_size = 256;
  config.rand_augment = "rand-m9-mstd0.5-inc1";
  config.random_erase_prob = 0.25;
  config.mixup_alpha = 0.8;
  config.cutmix_alpha = 1.0;
  LoaderOptions options;
  options.micro_batch_size = 64;
  auto cpu = make_loader(config, options);
  options.device = torch::Device(torch::kCUDA);
  auto gpu = make_loader(config, options);
  for (int i = 0; i < 4; ++i) {
    const Batch a = cpu->next(), b = gpu->next();
    EXPECT_TRUE(torch::allclose(b.images.cpu(), a.images, 1e-4, 1e-4)) << "batch " << i;
    EXPECT_TRUE(torch::allclose(b.targets.cpu(), a.targets)) << "batch " << i;
  }
}

}  // namespace
}  // namespace vit::data

// The model with the fused kernels against the model without them (and on the GPU against the
// CPU), forward and backward, in training and evaluation. The kernels one by one:
// test_model_gpu.cpp. Needs a GPU; skips with a reason without one.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/kernels/bias_sum_kernels.h"
#include "model/kernels/fused_bias_sums.h"
#include "model/kernels/fused_linear.h"
#include "model/kernels/fused_norm.h"
#include "model/vit.h"
#include "model/kernels/weight_casts.h"

#include "gpu_fixtures.h"

namespace vit::model {
namespace {

using namespace testing;

// Same weights, same input, same random draws (seeded before each pass).
void expect_models_match(const ModelConfig& fused_config, const ModelConfig& plain_config, bool train) {
  torch::manual_seed(3);
  VisionTransformer fused(fused_config);
  VisionTransformer plain(plain_config);
  copy_weights(fused, plain);
  fused->to(torch::kCUDA);
  plain->to(torch::kCUDA);
  fused->train(train);
  plain->train(train);
  auto images = torch::randn({16, 3, 32, 32}, torch::kCUDA);
  auto labels = torch::randint(0, 10, {16}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
  auto run = [&](VisionTransformer& model) {
    torch::manual_seed(7);  // drop path and dropout draw the same masks in both models
    return bf16_logits(model, images, labels);
  };
  auto lf = run(fused), lp = run(plain);
  EXPECT_LT(max_rel(lf, lp), 2e-2);
  auto pf = fused->named_parameters();
  double worst = 0;
  std::string worst_name;
  for (auto& p : plain->named_parameters()) {
    ASSERT_TRUE(pf[p.key()].grad().defined()) << p.key() << ": no gradient in the fused model";
    double e = max_rel(pf[p.key()].grad(), p.value().grad());
    if (e > worst) worst = e, worst_name = p.key();
  }
  EXPECT_LT(worst, 5e-2) << worst_name;  // bf16 matmuls on both sides; same values up to summation order
}

// Same weights, same input: the model with the fused paths against the model with ATen's ops
// for the ones switched off, one switch at a time and both, so a failure names its path.
struct Fusions {
  bool norm, bias_grad;
};

void expect_model_matches_unfused(Fusions off) {
  ModelConfig c = model_config(32, 4, 384, 4, 6, 1536, 10);
  ModelConfig plain = c;
  plain.fused_norm = !off.norm;
  plain.fused_bias_grad = !off.bias_grad;
  expect_models_match(c, plain, /*train=*/true);
}

TEST(FusedNorm, ModelMatchesUnfused) {
  REQUIRE_FUSED_GPU();
  expect_model_matches_unfused({/*norm=*/true, /*bias_grad=*/false});
}

TEST(FusedLinear, ModelMatchesAutocastLinear) {
  REQUIRE_FUSED_GPU();
  expect_model_matches_unfused({/*norm=*/false, /*bias_grad=*/true});
}

TEST(FusedNormAndLinear, ModelMatchesAtenOps) {
  REQUIRE_FUSED_GPU();
  expect_model_matches_unfused({/*norm=*/true, /*bias_grad=*/true});
}

// With drop path (the LayerNorm's branch sums take the drop-path factor) and dropout (proj and
// fc2 then keep their bias sums, fc1's stays in the GELU backward), training and eval mode:
// fused_bias_grad on against off, everything else the same.
TEST(FusedBiasGrad, ModelMatchesWithDropPathAndDropout) {
  REQUIRE_FUSED_GPU();
  for (double dropout : {0.0, 0.1}) {
    for (bool train : {true, false}) {
      SCOPED_TRACE("dropout " + std::to_string(dropout) + (train ? " train" : " eval"));
      ModelConfig c = model_config(32, 4, 384, 4, 6, 1536, 10);
      c.drop_path = 0.3;
      c.dropout = dropout;
      ModelConfig plain = c;
      plain.fused_bias_grad = false;
      expect_models_match(c, plain, train);
    }
  }
}

// fp32 on the GPU (patch embedding as a matmul, ATen's SDPA) against the CPU (convolution).
TEST(GpuModel, MatchesCpuInFp32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const ModelConfig c = model_config(48, 8, 64, 2, 4, 128, 7);
  torch::manual_seed(5);
  VisionTransformer cpu(c), gpu(c);
  copy_weights(cpu, gpu);
  gpu->to(torch::kCUDA);
  auto images = torch::randn({5, 3, 48, 48});
  auto lc = cpu->forward(images);
  auto lg = gpu->forward(images.to(torch::kCUDA));
  EXPECT_LT(max_rel(lg.cpu(), lc), 1e-4);
  lc.square().sum().backward();
  lg.square().sum().backward();
  auto pg = gpu->named_parameters();
  for (auto& p : cpu->named_parameters()) {
    EXPECT_LT(max_rel(pg[p.key()].grad().cpu(), p.value().grad()), 1e-3) << p.key();
  }
}

}  // namespace
}  // namespace vit::model

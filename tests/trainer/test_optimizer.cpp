// The optimiser step against hand-computed AdamW, and what it holds on to between steps.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/optimizer.h"

namespace vit::train {
namespace {

TEST(Optimizer, AdamWFirstStepByHandAndNoGradientKeptAfterwards) {
  OptimConfig c;
  c.name = "adamw";
  c.weight_decay = 0.1;
  c.clip_grad_norm = 0.0;
  auto w = torch::tensor({1.0f, -2.0f}).requires_grad_(true);
  Optimizer opt(c, {{"w", w}});
  auto grad = torch::tensor({0.5f, -0.25f});
  w.mutable_grad() = grad;
  opt.set_lr(0.01);
  auto norm = opt.step();
  EXPECT_NEAR(norm.item<double>(), std::sqrt(0.5 * 0.5 + 0.25 * 0.25), 1e-6);
  // Step 1: decoupled decay w * (1 - lr * wd), then m / (sqrt(v) + eps) with bias correction = sign(g).
  EXPECT_NEAR(w[0].item<double>(), 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(w[1].item<double>(), -2.0 * (1 - 0.001) + 0.01, 1e-6);
  // Freed by the owner (GradSync::zero_grad without buckets): nobody else may still hold it.
  w.mutable_grad() = torch::Tensor();
  EXPECT_EQ(grad.use_count(), 1);
  // A later step without a gradient (unused parameter) updates with zeros: decay only.
  opt.step();
  EXPECT_FALSE(w.grad().defined());
}

}  // namespace
}  // namespace vit::train

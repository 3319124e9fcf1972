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

TEST(Optimizer, SgdByHandWithAndWithoutMomentum) {
  // torch.optim.SGD: g' = g + wd * w (coupled decay); buf = g' on the first step, then
  // momentum * buf + g'; w -= lr * buf. Momentum 0 keeps no buffer (plain SGD) and saves none.
  for (double momentum : {0.0, 0.9}) {
    OptimConfig c;
    c.name = "sgd";
    c.momentum = momentum;
    c.weight_decay = 0.5;
    c.clip_grad_norm = 0.0;
    auto w = torch::tensor({1.0f}).requires_grad_(true);
    Optimizer opt(c, {{"w", w}});
    opt.set_lr(0.1);
    w.mutable_grad() = torch::tensor({2.0f});
    opt.step();
    double g1 = 2.0 + 0.5 * 1.0, w1 = 1.0 - 0.1 * g1;  // 0.75
    EXPECT_NEAR(w.item<double>(), w1, 1e-6) << momentum;
    w.mutable_grad() = torch::tensor({2.0f});
    opt.step();
    double g2 = 2.0 + 0.5 * w1, buf = momentum * g1 + g2;
    EXPECT_NEAR(w.item<double>(), w1 - 0.1 * buf, 1e-6) << momentum;
    bool saves_buffer = false;
    for (const auto& [name, t] : opt.state()) saves_buffer |= name.rfind("momentum.", 0) == 0;
    EXPECT_EQ(saves_buffer, momentum > 0);
    Optimizer again(c, {{"w", w}});
    again.load_state(opt.state(), "state");  // round trip: nothing missing, nothing extra needed
  }
}

TEST(Optimizer, NoDecayForBiasesNormsAndEmbeddingsAsTimm) {
  // timm's param_groups_weight_decay: 1-D tensors (biases, LayerNorm) and pos_embed, cls_token.
  for (const char* name : {"blocks.0.attn.qkv.bias", "blocks.3.norm1.weight", "norm.bias", "fc_norm.weight",
                           "cls_token", "pos_embed", "head.bias"})
    EXPECT_TRUE(is_no_decay(name)) << name;
  for (const char* name : {"blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "patch_embed.proj.weight",
                           "head.weight", "pre_logits.fc.weight"})
    EXPECT_FALSE(is_no_decay(name)) << name;
  // And the step applies it so: with a zero gradient only decay moves a weight.
  OptimConfig c;
  c.name = "sgd";
  c.momentum = 0.0;
  c.weight_decay = 0.5;
  c.clip_grad_norm = 0.0;
  auto w = torch::ones({2}).requires_grad_(true), b = torch::ones({2}).requires_grad_(true);
  Optimizer opt(c, {{"fc.weight", w}, {"fc.bias", b}});
  opt.set_lr(0.1);
  w.mutable_grad() = torch::zeros({2});
  b.mutable_grad() = torch::zeros({2});
  opt.step();
  EXPECT_TRUE(torch::allclose(w, torch::full({2}, 1.0 - 0.1 * 0.5)));
  EXPECT_TRUE(torch::equal(b, torch::ones({2})));
}

TEST(Optimizer, ClipsAtTheGlobalNormOverEveryGradient) {
  // Gradients (3, 0) and (0, 4): global norm 5, clipped to 1 -> scaled by 1 / 5 (up to the 1e-6
  // that torch adds), so plain SGD moves by lr * g / 5. Below the threshold nothing is scaled.
  for (double clip : {1.0, 10.0}) {
    OptimConfig c;
    c.name = "sgd";
    c.momentum = 0.0;
    c.weight_decay = 0.0;
    c.clip_grad_norm = clip;
    auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({2}).requires_grad_(true);
    Optimizer opt(c, {{"a", a}, {"b", b}});
    opt.set_lr(1.0);
    a.mutable_grad() = torch::tensor({3.0f, 0.0f});
    b.mutable_grad() = torch::tensor({0.0f, 4.0f});
    auto norm = opt.step();
    EXPECT_NEAR(norm.item<double>(), 5.0, 1e-6);  // reported before clipping
    const double scale = clip < 5.0 ? clip / (5.0 + 1e-6) : 1.0;
    EXPECT_NEAR(a[0].item<double>(), -3.0 * scale, 1e-5) << clip;
    EXPECT_NEAR(b[1].item<double>(), -4.0 * scale, 1e-5) << clip;
  }
}

}  // namespace
}  // namespace vit::train

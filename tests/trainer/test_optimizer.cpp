// The optimiser step against hand-computed AdamW and SGD and against torch.optim.Muon, and what it
// holds on to between steps.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

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

// Deterministic test values (the same formulas in the Python that produced the expected numbers).
torch::Tensor test_matrix(int64_t rows, int64_t cols, double k) {
  auto t = torch::empty({rows, cols});
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[i][j] = std::fmod(static_cast<double>(i * cols + j) * 0.37 + k, 1.0) - 0.5;
  return t;
}
torch::Tensor test_gradient(int64_t rows, int64_t cols, double k, int step) {
  auto t = torch::empty({rows, cols});
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[i][j] = std::sin(1.3 * static_cast<double>(i * cols + j) + k + 0.7 * step);
  return t;
}

TEST(Optimizer, MuonEqualsTorchOptimMuonAndLeavesTheRestToAdamW) {
  // Expected: torch 2.11's torch.optim.Muon(lr=0.1, weight_decay=0.2, momentum=0.95, nesterov=True,
  // adjust_lr_fn="match_rms_adamw") after two steps on these three matrices, with its Newton-Schulz
  // iteration run in float64 (vitrain's CPU path runs it in float32; torch's in bfloat16).
  const std::vector<std::vector<double>> expected = {
      {-0.36140996, -0.05787550, 0.28823704, -0.26994270, 0.11971773, 0.42173567, -0.19583547, 0.18063498,
       -0.40059683, -0.05362825, 0.24496989, -0.33272108, 0.07311901, 0.42811880, -0.22761124},
      {-0.30733949, 0.02113928, 0.41713843, -0.13929620, 0.20141068, -0.45473206, -0.08551756, 0.29642066,
       -0.30827186, 0.02067861, 0.35933271, -0.19176739, 0.17486522, -0.47810164, -0.15967272},
      {-0.22524929, 0.17880432, -0.40030271, -0.07933844, 0.23407835, -0.36187321, 0.04207281, 0.40959331,
       -0.23461595, 0.08455782, -0.49623579, -0.09313718, 0.26613265, -0.38631141, -0.06113393}};
  OptimConfig c;
  c.name = "muon";
  c.weight_decay = 0.2;
  c.clip_grad_norm = 0.0;
  // Two matrices of one shape (orthogonalised in one batch), a tall one, and two that are not
  // hidden matrices: the classifier and a norm take AdamW.
  std::vector<torch::Tensor> matrices = {test_matrix(3, 5, 0.1), test_matrix(3, 5, 0.2), test_matrix(5, 3, 0.3)};
  auto head = torch::tensor({{1.0f, -1.0f}, {0.5f, 2.0f}}), norm = torch::ones({2});
  model::NamedTensors params = {{"blocks.0.attn.proj.weight", matrices[0]},
                                {"blocks.1.attn.proj.weight", matrices[1]},
                                {"blocks.0.mlp.fc2.weight", matrices[2]},
                                {"head.weight", head},
                                {"blocks.0.norm1.weight", norm}};
  for (auto& [name, p] : params) p.requires_grad_(true);
  Optimizer opt(c, params);
  opt.set_lr(0.1);
  for (int step = 0; step < 2; ++step) {
    for (size_t k = 0; k < matrices.size(); ++k)
      matrices[k].mutable_grad() = test_gradient(matrices[k].size(0), matrices[k].size(1), static_cast<double>(k), step);
    head.mutable_grad() = torch::tensor({{0.5f, -0.5f}, {1.0f, -2.0f}});
    norm.mutable_grad() = torch::tensor({1.0f, -1.0f});
    opt.step();
    if (step == 0) {
      // AdamW's first step: decoupled decay (not for norms), then lr * sign(g).
      EXPECT_NEAR(head[0][0].item<double>(), 1.0 * (1 - 0.1 * 0.2) - 0.1, 1e-6);
      EXPECT_NEAR(norm[1].item<double>(), 1.0 + 0.1, 1e-6);
    }
  }
  for (size_t k = 0; k < matrices.size(); ++k) {
    auto got = matrices[k].detach().flatten();
    for (int64_t i = 0; i < got.numel(); ++i) EXPECT_NEAR(got[i].item<double>(), expected[k][i], 2e-6) << k << "," << i;
  }
  std::map<std::string, torch::Tensor> state;
  for (const auto& [name, t] : opt.state()) state[name] = t;
  EXPECT_TRUE(state.count("muon_momentum.blocks.0.mlp.fc2.weight"));
  EXPECT_TRUE(state.count("exp_avg.head.weight") && state.count("exp_avg.blocks.0.norm1.weight"));
  EXPECT_FALSE(state.count("exp_avg.blocks.0.attn.proj.weight"));
  Optimizer again(c, params);
  again.load_state(opt.state(), "state");  // round trip

  // A non-finite gradient norm skips the step: neither weights nor buffers move.
  auto before = matrices[1].detach().clone();
  auto buffer = state["muon_momentum.blocks.1.attn.proj.weight"].clone();
  matrices[0].mutable_grad()[0][0] = std::nan("");
  opt.step();
  EXPECT_TRUE(torch::equal(matrices[1].detach(), before));
  EXPECT_TRUE(torch::equal(state["muon_momentum.blocks.1.attn.proj.weight"], buffer));
  EXPECT_EQ(opt.skipped_steps().item<int64_t>(), 1);
}

TEST(Optimizer, MuonsUpdateKeepsTheGradientsSingularVectors) {
  // Newton-Schulz multiplies by odd polynomials of the singular values: the update U f(S) V^T
  // keeps the gradient's singular vectors (u = g after the first step's Nesterov term), with
  // f(S) in about [0.5, 1.5] (torch.optim.Muon's documentation) instead of S.
  torch::manual_seed(3);
  for (auto shape : {std::vector<int64_t>{24, 40}, std::vector<int64_t>{40, 24}}) {
    OptimConfig c;
    c.name = "muon";
    c.weight_decay = 0.0;
    c.clip_grad_norm = 0.0;
    auto w = torch::zeros(shape).requires_grad_(true);
    Optimizer opt(c, {{"blocks.0.mlp.fc1.weight", w}});
    opt.set_lr(1.0);
    auto g = torch::randn(shape);
    w.mutable_grad() = g;
    opt.step();
    auto update = -w.detach() / (0.2 * std::sqrt(40.0));
    auto [u, s, vh] = torch::linalg_svd(g, /*full_matrices=*/false);
    auto inner = torch::mm(torch::mm(u.t(), update), vh.t());  // f(S) when the vectors are kept
    auto diag = inner.diagonal();
    EXPECT_LT((inner - torch::diag(diag)).abs().max().item<double>(), 1e-4);
    EXPECT_GT(diag.min().item<double>(), 0.5);
    EXPECT_LT(diag.max().item<double>(), 1.5);
  }
}

}  // namespace
}  // namespace vit::train

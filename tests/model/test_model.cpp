// Unit tests of the model library: shapes, parameter counts, FLOPs, initialisation, determinism.
// Position-embedding resampling, pretrained-weight transfer and safetensors files: test_weights.cpp.
// Every expected number is closed form or worked out by hand in the test; agreement with timm
// and Python's safetensors is tested separately in tests/python/test_timm_compat.py.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/errors.h"
#include "core/json.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/transfer.h"
#include "model/vit.h"
#include "fixtures.h"

namespace vit::model {
namespace {

using namespace testing;

// ---- shapes, counts, FLOPs ----

TEST(VisionTransformer, OutputShapesSquare) {
  torch::manual_seed(0);
  VisionTransformer model(small_config());
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_EQ(model->forward_features(x).sizes(), (std::vector<int64_t>{2, 1 + 8 * 8, 64}));
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(VisionTransformer, OutputShapesNonSquare) {
  ModelConfig c = small_config("mlp");
  c.image_height = 24;  // grid 6 x 10
  c.image_width = 40;
  torch::manual_seed(0);
  VisionTransformer model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 3, 24, 40});
  EXPECT_EQ(param(model, "pos_embed").sizes(), (std::vector<int64_t>{1, 1 + 6 * 10, 64}));
  EXPECT_EQ(model->forward_features(x).sizes(), (std::vector<int64_t>{3, 61, 64}));
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(VisionTransformer, ParameterNamesAreTimms) {
  VisionTransformer model(small_config("mlp"));
  std::vector<std::string> names;
  for (const auto& [name, t] : named_parameters(*model)) names.push_back(name);
  const std::vector<std::string> first = {"cls_token",
                                          "pos_embed",
                                          "patch_embed.proj.weight",
                                          "patch_embed.proj.bias",
                                          "blocks.0.norm1.weight",
                                          "blocks.0.norm1.bias",
                                          "blocks.0.attn.qkv.weight",
                                          "blocks.0.attn.qkv.bias",
                                          "blocks.0.attn.proj.weight",
                                          "blocks.0.attn.proj.bias",
                                          "blocks.0.norm2.weight",
                                          "blocks.0.norm2.bias",
                                          "blocks.0.mlp.fc1.weight",
                                          "blocks.0.mlp.fc1.bias",
                                          "blocks.0.mlp.fc2.weight",
                                          "blocks.0.mlp.fc2.bias"};
  ASSERT_EQ(names.size(), 4u + 2 * 12 + 2 + 2 + 2);
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 16), first);
  const std::vector<std::string> last = {"norm.weight", "norm.bias", "pre_logits.fc.weight", "pre_logits.fc.bias",
                                         "head.weight", "head.bias"};
  EXPECT_EQ(std::vector<std::string>(names.end() - 6, names.end()), last);
}

TEST(ParameterCount, EqualsBuiltModule) {
  ModelConfig nonsquare = small_config("mlp");
  nonsquare.image_height = 24;
  nonsquare.image_width = 40;
  ModelConfig grey = small_config();
  grey.channels = 1;
  grey.depth = 3;
  grey.patch_size = 8;
  for (const ModelConfig& c : {small_config("linear"), small_config("mlp"), nonsquare, grey}) {
    EXPECT_EQ(count_parameters(c), built_numel(c)) << c.head << " " << c.height() << "x" << c.width_px();
  }
}

TEST(ParameterCount, SmallConfigByHand) {
  // D=64, M=128, patch 4, 3 channels, 65 tokens, 2 blocks, 10 classes:
  //   cls 64 + pos 65*64=4160 + patch 48*64+64=3136                             = 7360
  //   block: norms 4*64=256, qkv 64*192+192=12480, proj 64*64+64=4160,
  //          fc1 64*128+128=8320, fc2 128*64+64=8256                           = 33472 (x2 = 66944)
  //   final norm 128, linear head 64*10+10=650                                 -> 75082
  //   mlp head adds pre_logits 64*64+64=4160                                   -> 79242
  EXPECT_EQ(count_parameters(small_config("linear")), 75082);
  EXPECT_EQ(count_parameters(small_config("mlp")), 79242);
}

TEST(ParameterCount, PresetsEqualTimm) {
  // timm's counts with 1000 classes and a linear head (from the issue; tests/python checks timm itself).
  EXPECT_EQ(count_parameters(preset_config("vit_tiny_patch16_224")), 5717416);
  EXPECT_EQ(count_parameters(preset_config("vit_small_patch16_224")), 22050664);
  EXPECT_EQ(count_parameters(preset_config("vit_base_patch16_224")), 86567656);
  EXPECT_EQ(count_parameters(preset_config("vit_base_patch32_224")), 88224232);
  EXPECT_EQ(count_parameters(preset_config("vit_large_patch16_224")), 304326632);
  EXPECT_EQ(count_parameters(preset_config("vit_huge_patch14_224")), 632045800);
  // The pretraining head adds pre_logits D*D + D: Ti/16 192*192 + 192 = 37056.
  EXPECT_EQ(count_parameters(preset_config("vit_tiny_patch16_224", "mlp")), 5717416 + 37056);
}

TEST(ParameterCount, TinyPresetEqualsBuiltModule) {
  EXPECT_EQ(built_numel(preset_config("vit_tiny_patch16_224")), 5717416);
}

TEST(Presets, UnknownNameSuggestsNearest) {
  auto msg = error_message<ConfigError>([] { preset_shape("vit_base_patch16_225"); });
  EXPECT_NE(msg.find("model.preset"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vit_base_patch16_224"), std::string::npos) << msg;
}

TEST(Flops, TinyConfigByHand) {
  // 8 px, patch 4 -> 4 patches, N = 5 tokens; C=3, D=8, one block, M=16, K=10.
  ModelConfig c;
  c.image_size = 8;
  c.patch_size = 4;
  c.width = 8;
  c.depth = 1;
  c.num_heads = 2;
  c.mlp_dim = 16;
  c.num_classes = 10;
  c.head = "linear";
  // patch embedding: 2 * 4 patches * (3*4*4=48) * 8        = 3072
  // qkv:             2 * 5 * 8 * 24                         = 1920
  // q k^T:           2 * 5 * 5 * 8 (all heads together)     =  400
  // attn @ v:        2 * 5 * 5 * 8                          =  400
  // out projection:  2 * 5 * 8 * 8                          =  640
  // fc1 + fc2:       2 * 5 * 8 * 16 * 2                     = 2560
  // head on [CLS]:   2 * 8 * 10                             =  160
  EXPECT_DOUBLE_EQ(forward_flops_per_image(c), 3072 + 1920 + 400 + 400 + 640 + 2560 + 160);  // 9152
  c.head = "mlp";  // + pre_logits 2 * 8 * 8 = 128
  EXPECT_DOUBLE_EQ(forward_flops_per_image(c), 9152 + 128);
}

// ---- initialisation ----

TEST(Initialisation, FollowsTimm) {
  ModelConfig c = small_config("linear");
  c.width = 256;
  c.mlp_dim = 512;
  c.num_classes = 100;
  torch::manual_seed(1);
  VisionTransformer model(c);
  std::vector<torch::Tensor> linear_weights;
  for (const auto& [name, t] : named_parameters(*model)) {
    bool linear = name.find("qkv.") != std::string::npos || name.find("proj.") != std::string::npos ||
                  name.find("fc1.") != std::string::npos || name.find("fc2.") != std::string::npos;
    if (name.rfind("patch_embed", 0) == 0) continue;
    if (linear && name.find(".weight") != std::string::npos) linear_weights.push_back(t.flatten());
    bool norm = name.find("norm") != std::string::npos;
    bool bias = name.find(".bias") != std::string::npos;
    if ((linear || norm) && bias) {
      EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0) << name;
    } else if (norm) {
      EXPECT_TRUE(torch::equal(t, torch::ones_like(t))) << name;
    }
  }
  auto w = torch::cat(linear_weights);  // ~ 2 * (196608 + 65536 + 131072 + 131072) samples of N(0, 0.02)
  EXPECT_NEAR(w.std().item<double>(), 0.02, 0.02 * 0.01);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(param(model, "pos_embed").std().item<double>(), 0.02, 0.02 * 0.02);  // 65*256 samples
  EXPECT_LT(param(model, "cls_token").abs().max().item<double>(), 1e-5);         // normal(1e-6)
  EXPECT_GT(param(model, "cls_token").abs().max().item<double>(), 0.0);
  // From scratch (no init_from) the linear head is timm's: trunc normal 0.02 (25600 samples), zero bias.
  EXPECT_NEAR(param(model, "head.weight").std().item<double>(), 0.02, 0.02 * 0.03);
  EXPECT_EQ(param(model, "head.bias").count_nonzero().item<int64_t>(), 0);
  // Patch conv at PyTorch's default: kaiming_uniform(a=sqrt 5) = U(-b, b), b = 1/sqrt(fan_in = 3*4*4).
  const double bound = 1.0 / std::sqrt(48.0);
  auto conv = param(model, "patch_embed.proj.weight");
  EXPECT_LE(conv.abs().max().item<double>(), bound);
  EXPECT_NEAR(conv.std().item<double>(), bound / std::sqrt(3.0), bound / std::sqrt(3.0) * 0.03);
  EXPECT_LE(param(model, "patch_embed.proj.bias").abs().max().item<double>(), bound);
}

TEST(Initialisation, MlpHeadIsRandom) {
  ModelConfig c = small_config("mlp");
  c.width = 256;
  c.num_classes = 256;
  torch::manual_seed(2);
  VisionTransformer model(c);
  for (const char* name : {"pre_logits.fc.weight", "head.weight"}) {
    EXPECT_NEAR(param(model, name).std().item<double>(), 0.02, 0.02 * 0.02) << name;  // 65536 samples
  }
  EXPECT_EQ(param(model, "pre_logits.fc.bias").count_nonzero().item<int64_t>(), 0);
  EXPECT_EQ(param(model, "head.bias").count_nonzero().item<int64_t>(), 0);
}

TEST(Initialisation, HeadIsZeroForFineTuningOrWhenAsked) {
  auto head_nonzero = [](ModelConfig c) {
    VisionTransformer model(c);
    return param(model, "head.weight").count_nonzero().item<int64_t>();
  };
  ModelConfig c = small_config("linear");
  EXPECT_GT(head_nonzero(c), 0);  // from scratch: random
  c.init_from = "pretrain.safetensors";
  EXPECT_EQ(head_nonzero(c), 0);  // fine-tuning: the paper's zero head
  c.head_init = "trunc_normal";
  EXPECT_GT(head_nonzero(c), 0);  // asked for
  c.init_from.clear();
  c.head_init = "zero";
  EXPECT_EQ(head_nonzero(c), 0);
  c.head = "mlp";  // zero applies to the final Linear only
  VisionTransformer mlp(c);
  EXPECT_EQ(param(mlp, "head.weight").count_nonzero().item<int64_t>(), 0);
  EXPECT_GT(param(mlp, "pre_logits.fc.weight").count_nonzero().item<int64_t>(), 0);
  c.head_init = "zeros";
  auto msg = error_message<ConfigError>([&] { VisionTransformer bad(c); });
  EXPECT_NE(msg.find("model.head_init"), std::string::npos) << msg;
}

TEST(Initialisation, SameSeedSameWeights) {
  auto build = [](uint64_t seed) {
    torch::manual_seed(seed);
    VisionTransformer model(small_config("mlp"));
    return named_parameters(*model);
  };
  auto a = build(42), b = build(42), other = build(43);
  ASSERT_EQ(a.size(), b.size());
  bool any_different = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    if (!torch::equal(a[i].second, other[i].second)) any_different = true;
  }
  EXPECT_TRUE(any_different);
}

// ---- regularisation is training-only ----

TEST(VisionTransformer, DropoutAndDropPathInactiveInEval) {
  ModelConfig c = small_config("mlp");
  c.dropout = 0.5;
  c.attn_dropout = 0.5;
  c.drop_path = 0.5;
  torch::manual_seed(3);
  VisionTransformer noisy(c);
  ModelConfig clean_config = small_config("mlp");
  VisionTransformer clean(clean_config);
  {
    torch::NoGradGuard no_grad;
    auto src = named_parameters(*noisy);
    auto dst = named_parameters(*clean);
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  auto x = torch::randn({4, 3, 32, 32});
  torch::NoGradGuard no_grad;
  noisy->train();
  EXPECT_FALSE(torch::equal(noisy->forward(x), noisy->forward(x)));  // regularisation is live in training
  noisy->eval();
  clean->eval();
  auto a = noisy->forward(x), b = noisy->forward(x);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::allclose(a, clean->forward(x), /*rtol=*/0, /*atol=*/1e-6));
}

// ---- attention backward ----

// The attention's own backward for q, k, v (one gradient written in the projection's layout)
// against autograd through timm's ops: qkv.reshape(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4).unbind(0).
TEST(Attention, GradientsMatchTimmsOpsThroughAutograd) {
  const int64_t B = 3, N = 7, D = 32, H = 4, Dh = D / H;
  torch::manual_seed(11);
  Attention attn(D, H, 0.0, 0.0);
  auto x = torch::randn({B, N, D}, torch::kFloat64).requires_grad_(true);
  attn->to(torch::kFloat64);
  auto weight_out = torch::randn({B, N, D}, torch::kFloat64);
  (attn->forward(x) * weight_out).sum().backward();

  auto params = attn->named_parameters();
  auto w = params["qkv.weight"].detach().clone().requires_grad_(true);
  auto b = params["qkv.bias"].detach().clone().requires_grad_(true);
  auto x_ref = x.detach().clone().requires_grad_(true);
  auto heads = torch::linear(x_ref, w, b).reshape({B, N, 3, H, Dh}).permute({2, 0, 3, 1, 4}).unbind(0);
  auto out = at::scaled_dot_product_attention(heads[0], heads[1], heads[2]).transpose(1, 2).reshape({B, N, D});
  (torch::linear(out, params["proj.weight"].detach(), params["proj.bias"].detach()) * weight_out).sum().backward();

  EXPECT_TRUE(torch::allclose(x.grad(), x_ref.grad(), 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(params["qkv.weight"].grad(), w.grad(), 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(params["qkv.bias"].grad(), b.grad(), 1e-10, 1e-12));
}

// A bias gradient moves to a following fused kernel only where the fused linear runs (a GPU
// under bf16 autocast): on the CPU it stays with the Linear, and asking otherwise is an error
// rather than a silently missing gradient.
TEST(FusedBiasGrad, StaysWithTheLinearOnTheCpu) {
  torch::manual_seed(12);
  auto x = torch::randn({2, 5, 16});
  Attention attn(16, 4, 0.0, 0.0, /*fused_bias_grad=*/true);
  Mlp mlp(16, 32, 0.0, /*fused_bias_grad=*/true);
  EXPECT_FALSE(attn->proj_bias_outside(x));
  EXPECT_FALSE(mlp->fc2_bias_outside(x));
  EXPECT_NE(error_message<ModelError>([&] { attn->compute(x, /*proj_bias_grad=*/false); }).find("proj_bias_outside"),
            std::string::npos);
  EXPECT_NE(error_message<ModelError>([&] { mlp->compute(x, /*fc2_bias_grad=*/false); }).find("fc2_bias_outside"),
            std::string::npos);
  (attn->forward(x).sum() + mlp->forward(x).sum()).backward();
  for (auto& p : attn->named_parameters()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
  for (auto& p : mlp->named_parameters()) EXPECT_TRUE(p.value().grad().defined()) << p.key();
}

}  // namespace
}  // namespace vit::model

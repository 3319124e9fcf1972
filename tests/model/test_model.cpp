// Unit tests of the model library: shapes, parameter counts, FLOPs, initialisation, determinism,
// position-embedding resampling, pretrained-weight transfer and safetensors files.
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

namespace vit::model {
namespace {

// 32 px, patch 4 (grid 8x8), width 64, two blocks of four heads.
ModelConfig small_config(const std::string& head = "linear") {
  ModelConfig c;
  c.image_size = 32;
  c.patch_size = 4;
  c.width = 64;
  c.depth = 2;
  c.num_heads = 4;
  c.mlp_dim = 128;
  c.num_classes = 10;
  c.head = head;
  return c;
}

ModelConfig preset_config(const std::string& name, const std::string& head = "linear") {
  ModelConfig c;
  apply_preset(name, c);
  c.num_classes = 1000;
  c.head = head;
  return c;
}

int64_t built_numel(const ModelConfig& c) {
  VisionTransformer model(c);
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

torch::Tensor param(VisionTransformer& model, const std::string& name) {
  return model->named_parameters(true)[name];
}

// Runs `f`, expects it to throw E and returns the message.
template <typename E, typename F>
std::string error_message(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

// A fresh directory under /tmp, removed with its files at the end of the test. POSIX calls, not
// std::filesystem: the LibTorch 2.11 wheel exports its own std::filesystem symbols, and
// remove_all resolves to libtorch.so's copy and crashes.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/vit_model_test_XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

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

// ---- position-embedding resampling ----

TEST(ResamplePosEmbed, IdentityWhenGridsEqual) {
  auto p = torch::randn({1, 1 + 6 * 10, 16});
  EXPECT_TRUE(torch::equal(resample_pos_embed(p, 6, 10, 6, 10), p));
}

TEST(ResamplePosEmbed, KeepsClsAndShape) {
  auto p = torch::randn({1, 1 + 8 * 8, 16});
  for (const char* mode : {"bicubic", "bilinear"}) {
    auto up = resample_pos_embed(p, 8, 8, 12, 12, mode);
    EXPECT_EQ(up.sizes(), (std::vector<int64_t>{1, 1 + 12 * 12, 16}));
    EXPECT_TRUE(torch::equal(up.select(1, 0), p.select(1, 0))) << mode;
    auto wide = resample_pos_embed(p, 8, 8, 10, 14, mode);
    EXPECT_EQ(wide.sizes(), (std::vector<int64_t>{1, 1 + 10 * 14, 16}));
    auto down = resample_pos_embed(up, 12, 12, 8, 8, mode);
    EXPECT_EQ(down.sizes(), p.sizes());
  }
}

TEST(ResamplePosEmbed, ConstantStaysConstant) {
  // Interpolation weights sum to one, so a grid of equal vectors stays that vector.
  auto value = torch::randn({1, 1, 16});
  auto p = torch::cat({torch::randn({1, 1, 16}), value.expand({1, 7 * 7, 16})}, 1);
  for (const char* mode : {"bicubic", "bilinear"}) {
    for (auto [h, w] : {std::pair<int64_t, int64_t>{12, 12}, {4, 4}, {10, 14}}) {
      auto r = resample_pos_embed(p, 7, 7, h, w, mode);
      auto grid = r.narrow(1, 1, h * w);
      EXPECT_TRUE(torch::allclose(grid, value.expand_as(grid), 0, 1e-5)) << mode << " " << h << "x" << w;
    }
  }
}

TEST(ResamplePosEmbed, KeepsDtype) {
  auto p = torch::randn({1, 1 + 4 * 4, 8}).to(torch::kBFloat16);
  auto r = resample_pos_embed(p, 4, 4, 6, 6);
  EXPECT_EQ(r.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(r.select(1, 0), p.select(1, 0)));
}

TEST(ResamplePosEmbed, Errors) {
  auto p = torch::randn({1, 1 + 4 * 4, 8});
  auto msg = error_message<ModelError>([&] { resample_pos_embed(p, 5, 5, 6, 6); });
  EXPECT_NE(msg.find("17 tokens"), std::string::npos) << msg;
  msg = error_message<ConfigError>([&] { resample_pos_embed(p, 4, 4, 6, 6, "nearest"); });
  EXPECT_NE(msg.find("model.pos_embed_interpolation"), std::string::npos) << msg;
}

// ---- pretrained-weight transfer ----

TEST(LoadPretrained, DropsHeadAndResamplesPosEmbed) {
  torch::manual_seed(4);
  VisionTransformer source(small_config("mlp"));  // 32 px: grid 8x8, pretraining head
  ModelConfig fine = small_config("linear");
  fine.image_size = 48;  // grid 12x12
  fine.num_classes = 5;
  fine.init_from = "pretrain.safetensors";  // fine-tuning: head_init auto -> zero
  VisionTransformer target(fine);
  auto src = named_parameters(*source);
  TransferReport report = load_pretrained(target, src, TransferOptions{}, "pretrain.safetensors");

  for (const auto& [name, t] : named_parameters(*target)) {
    if (name == "pos_embed" || name.rfind("head.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(t, param(source, name))) << name;
  }
  auto pos = param(target, "pos_embed");
  ASSERT_EQ(pos.sizes(), (std::vector<int64_t>{1, 1 + 12 * 12, 64}));
  EXPECT_TRUE(torch::equal(pos.select(1, 0), param(source, "pos_embed").select(1, 0)));  // [CLS] kept
  // The resampler itself is checked against timm in tests/python; here: it is the one applied.
  EXPECT_TRUE(torch::equal(pos, resample_pos_embed(param(source, "pos_embed"), 8, 8, 12, 12, "bicubic")));
  ASSERT_EQ(report.resampled.size(), 1u);
  EXPECT_NE(report.resampled[0].find("8x8 -> 12x12"), std::string::npos) << report.resampled[0];

  EXPECT_EQ(param(target, "head.weight").count_nonzero().item<int64_t>(), 0);
  EXPECT_EQ(param(target, "head.bias").count_nonzero().item<int64_t>(), 0);
  EXPECT_EQ(report.initialised, (std::vector<std::string>{"head.weight", "head.bias"}));
  EXPECT_EQ(report.dropped, (std::vector<std::string>{"pre_logits.fc.weight", "pre_logits.fc.bias", "head.weight",
                                                      "head.bias"}));
  EXPECT_EQ(report.loaded.size(), src.size() - 1 /*pos_embed*/ - 4 /*heads*/);
}

TEST(LoadPretrained, NonSquareTargetGrid) {
  torch::manual_seed(5);
  VisionTransformer source(small_config("mlp"));
  ModelConfig fine = small_config("linear");
  fine.image_height = 24;  // grid 6 x 10
  fine.image_width = 40;
  VisionTransformer target(fine);
  // A constant patch grid must arrive constant on the new grid.
  auto src = named_parameters(*source);
  for (auto& [name, t] : src)
    if (name == "pos_embed") t = torch::cat({t.narrow(1, 0, 1), torch::full({1, 64, 64}, 0.25)}, 1);
  load_pretrained(target, src, TransferOptions{}, "pretrain.safetensors");
  auto grid = param(target, "pos_embed").narrow(1, 1, 60);
  EXPECT_TRUE(torch::allclose(grid, torch::full_like(grid, 0.25), 0, 1e-6));
}

TEST(LoadPretrained, TransposedGridOfTheSameTokenCountIsResampled) {
  // 4x8 and 8x4 grids both have 32 patch tokens: only the grid the caller tells (a vitrain
  // checkpoint's config) shows that pos_embed must be resampled, not copied.
  torch::manual_seed(6);
  ModelConfig wide = small_config("mlp");
  wide.image_height = 16;  // grid 4 x 8
  wide.image_width = 32;
  VisionTransformer source(wide);
  ModelConfig tall = small_config("linear");
  tall.image_height = 32;  // grid 8 x 4
  tall.image_width = 16;
  VisionTransformer target(tall);
  auto src = named_parameters(*source);
  TransferOptions told;
  told.source_grid_h = 4;
  told.source_grid_w = 8;
  TransferReport report = load_pretrained(target, src, told, "step_00000010");
  EXPECT_TRUE(torch::equal(param(target, "pos_embed"), resample_pos_embed(param(source, "pos_embed"), 4, 8, 8, 4)));
  ASSERT_EQ(report.resampled.size(), 1u);
  EXPECT_NE(report.resampled[0].find("4x8 -> 8x4"), std::string::npos) << report.resampled[0];
  // The same grid told: copied as is.
  told.source_grid_h = 8;
  told.source_grid_w = 4;
  report = load_pretrained(target, src, told, "step_00000010");
  EXPECT_TRUE(torch::equal(param(target, "pos_embed"), param(source, "pos_embed")));
  EXPECT_TRUE(report.resampled.empty());
  // Untold (a .safetensors file): the model's token count is taken as the model's grid, as timm does.
  report = load_pretrained(target, src, TransferOptions{}, "wide.safetensors");
  EXPECT_TRUE(torch::equal(param(target, "pos_embed"), param(source, "pos_embed")));
  EXPECT_TRUE(report.resampled.empty());
  // A non-square source of another token count, untold: named, with where the grid comes from.
  ModelConfig other = small_config("linear");  // grid 8 x 8
  VisionTransformer square(other);
  auto msg = error_message<ModelError>([&] { load_pretrained(square, src, TransferOptions{}, "wide.safetensors"); });
  EXPECT_NE(msg.find("pos_embed: the source has 32 patch tokens, not a square grid"), std::string::npos) << msg;
  EXPECT_NE(msg.find("wide.safetensors"), std::string::npos) << msg;
}

TEST(LoadPretrained, MismatchedWidthNamesTheKey) {
  ModelConfig narrow = small_config("mlp");
  narrow.width = 32;
  VisionTransformer source(narrow);
  VisionTransformer target(small_config("linear"));
  auto msg = error_message<ModelError>(
      [&] { load_pretrained(target, named_parameters(*source), TransferOptions{}, "narrow.safetensors"); });
  EXPECT_NE(msg.find("narrow.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blocks.0.attn.qkv.weight: source shape [96, 32] vs model [192, 64]"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("pos_embed"), std::string::npos) << msg;
}

TEST(LoadPretrained, MissingKeyIsNamed) {
  VisionTransformer source(small_config("mlp"));
  VisionTransformer target(small_config("linear"));
  NamedTensors src;
  for (const auto& item : named_parameters(*source))
    if (item.first != "blocks.1.norm2.bias") src.push_back(item);
  auto msg =
      error_message<ModelError>([&] { load_pretrained(target, src, TransferOptions{}, "partial.safetensors"); });
  EXPECT_NE(msg.find("blocks.1.norm2.bias: missing"), std::string::npos) << msg;
}

// ---- safetensors ----

TEST(Safetensors, LayoutByHand) {
  // One F32 tensor [1.0, 2.0]: 8-byte little-endian header length, JSON header, then the bytes
  // 00 00 80 3f 00 00 00 40.
  std::string bytes = safetensors_bytes({{"a", torch::tensor({1.0f, 2.0f})}});
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  ASSERT_EQ(bytes.size(), 8 + n + 8);
  EXPECT_EQ((8 + n) % 8, 0u);  // data 8-byte aligned
  Json header = Json::parse(bytes.substr(8, n));
  EXPECT_EQ(header.at("a").at("dtype").as_string(), "F32");
  EXPECT_EQ(header.at("a").at("shape").as_array()[0].as_int(), 2);
  EXPECT_EQ(header.at("a").at("data_offsets").as_array()[1].as_int(), 8);
  EXPECT_EQ(bytes.substr(8 + n), std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8));
}

TEST(Safetensors, RoundTripDtypesAndMetadata) {
  TempDir dir;
  NamedTensors tensors = {
      {"f32", torch::randn({3, 5})},
      {"f16", torch::randn({7}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 3, 4}).to(torch::kBFloat16)},
      {"i64", torch::arange(5, torch::kInt64)},
      {"u8", torch::arange(3, torch::kUInt8)},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},  // non-contiguous: written contiguous
  };
  write_safetensors(dir.file("w.safetensors"), tensors, {{"format", "pt"}});
  auto file = read_safetensors(dir.file("w.safetensors"));
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(file.tensors[i].first, tensors[i].first);
    EXPECT_EQ(file.tensors[i].second.scalar_type(), tensors[i].second.scalar_type()) << tensors[i].first;
    EXPECT_TRUE(torch::equal(file.tensors[i].second, tensors[i].second)) << tensors[i].first;
  }
}

TEST(Safetensors, TruncatedFileNamesIt) {
  TempDir dir;
  std::string bytes = safetensors_bytes({{"w", torch::randn({16, 16})}});
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir.file(name), std::ios::binary) << content;
    return dir.file(name);
  };
  for (size_t keep : {bytes.size() - 4, bytes.size() / 2, size_t{12}, size_t{5}}) {
    std::string path = write("cut.safetensors", bytes.substr(0, keep));
    auto msg = error_message<CheckpointError>([&] { read_safetensors(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << keep << ": " << msg;
  }
  std::string missing = dir.file("missing.safetensors");
  auto msg = error_message<CheckpointError>([&] { read_safetensors(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  std::string garbage = write("garbage.safetensors", std::string("\x04\0\0\0\0\0\0\0{{{{", 12));
  msg = error_message<CheckpointError>([&] { read_safetensors(garbage); });
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;
}

TEST(Safetensors, NegativeOrOverflowingShapeIsOneLineNamingTheFile) {
  // The header of a valid file with its shape replaced: the same message form as other bad headers,
  // and no LibTorch backtrace (frames would follow "Exception raised from").
  TempDir dir;
  for (const char* shape : {"[-4, 16]", "[4611686018427387904, 4]", "[3037000500, 3037000500]"}) {
    const std::string json = std::string("{\"w\":{\"dtype\":\"F32\",\"shape\":") + shape + ",\"data_offsets\":[0,16]}}";
    std::string bytes(8, '\0');
    const uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    bytes += json + std::string(16, '\0');
    const std::string path = dir.file("shape.safetensors");
    std::ofstream(path, std::ios::binary) << bytes;
    auto msg = error_message<CheckpointError>([&] { read_safetensors(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << shape << ": " << msg;
    EXPECT_NE(msg.find("tensor 'w'"), std::string::npos) << shape << ": " << msg;
    EXPECT_EQ(msg.find("Exception raised from"), std::string::npos) << shape << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << shape << ": " << msg;
  }
}

}  // namespace
}  // namespace vit::model

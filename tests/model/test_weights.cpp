// Unit tests of the model library's weights: position-embedding resampling, pretrained-weight
// transfer and safetensors files. Every expected number is closed form or worked out by hand;
// agreement with timm and Python's safetensors is tested in tests/python/test_timm_compat.py.
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
  EXPECT_EQ(header.at("a").at("dtype").get<std::string>(), "F32");
  EXPECT_EQ(header.at("a").at("shape")[0].get<int64_t>(), 2);
  EXPECT_EQ(header.at("a").at("data_offsets")[1].get<int64_t>(), 8);
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

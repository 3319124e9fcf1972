// Host transforms, JPEG codec, device batch ops and config validation, against hand-computed values.
#include <gtest/gtest.h>

#include "core/errors.h"
#include "data/augment.h"
#include "data/config.h"
#include "data/image.h"
#include "data/synthetic.h"
#include "data/transforms.h"
#include "fixtures.h"

namespace vit::data {
namespace {

Image ramp(int64_t h, int64_t w) {
  Image im{h, w, std::vector<uint8_t>(static_cast<size_t>(h * w * 3))};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) im.pixels[(y * w + x) * 3 + c] = static_cast<uint8_t>(10 * x + 40 * y + c);
  return im;
}

TEST(Resample, SameSizeBoxCopiesExactlyAndFlips) {
  const Image im = ramp(4, 5);
  std::vector<uint8_t> out(3 * 4 * 5), flipped(3 * 4 * 5);
  resample_into(im, {0, 0, 4, 5}, false, 4, 5, Interpolation::kBilinear, out.data());
  resample_into(im, {0, 0, 4, 5}, true, 4, 5, Interpolation::kBicubic, flipped.data());
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 5; ++x)
      for (int c = 0; c < 3; ++c) {
        EXPECT_EQ(out[c * 20 + y * 5 + x], 10 * x + 40 * y + c);
        EXPECT_EQ(flipped[c * 20 + y * 5 + (4 - x)], 10 * x + 40 * y + c);
      }
}

TEST(Resample, PadCropBoxReadsZerosOutside) {
  const Image im = ramp(4, 4);
  std::vector<uint8_t> out(3 * 16);
  resample_into(im, {-1, 2, 4, 4}, false, 4, 4, Interpolation::kBilinear, out.data());  // shifted up 1, left 2
  EXPECT_EQ(out[0 * 4 + 0], 0);                // row -1
  EXPECT_EQ(out[1 * 4 + 0], 10 * 2 + 40 * 0);  // row 0, column 2
  EXPECT_EQ(out[1 * 4 + 2], 0);                // column 4 is outside
}

TEST(Resample, HalvingAveragesWithTheTriangleFilter) {
  // Bilinear at scale 2 (PIL semantics): output 0 centre at 1.0, taps 0,1,2 at distances
  // 0.5, 0.5, 1.5 scaled by 1/2 -> weights 0.75, 0.75, 0.25 -> (3 a + 3 b + c) / 7.
  Image im{1, 4, {0, 0, 0, 70, 70, 70, 140, 140, 140, 210, 210, 210}};
  std::vector<uint8_t> out(3 * 2);
  resample_into(im, {0, 0, 1, 4}, false, 1, 2, Interpolation::kBilinear, out.data());
  EXPECT_EQ(out[0], 50);   // (3 * 0 + 3 * 70 + 140) / 7; the tap at -1 is clipped
  EXPECT_EQ(out[1], 160);  // (70 + 3 * 140 + 3 * 210) / 7; the tap at 4 is clipped
}

TEST(CropBoxes, CenterCropMatchesResizeThenCrop) {
  // 256x256 -> resize shorter side to floor(224 / 0.875) = 256 (no change), crop 224 at 16.
  const CropBox b = center_crop_box(256, 256, 224, 224, 0.875);
  EXPECT_DOUBLE_EQ(b.top, 16);
  EXPECT_DOUBLE_EQ(b.left, 16);
  EXPECT_DOUBLE_EQ(b.height, 224);
  // 500 wide x 250 high -> resize by 256/250; 224 output px = 218.75 source px.
  const CropBox c = center_crop_box(250, 500, 224, 224, 0.875);
  EXPECT_NEAR(c.height, 224.0 * 250 / 256, 1e-9);
  EXPECT_NEAR(c.left, (500 - 224.0 * 250 / 256) / 2, 1e-9);
}

TEST(CropBoxes, RandomResizedCropStaysInsideWithinScale) {
  Rng rng(3);
  for (int i = 0; i < 500; ++i) {
    const CropBox b = random_resized_crop_box(375, 500, {0.08, 1.0}, {0.75, 4.0 / 3.0}, rng);
    EXPECT_GE(b.top, 0);
    EXPECT_GE(b.left, 0);
    EXPECT_LE(b.top + b.height, 375);
    EXPECT_LE(b.left + b.width, 500);
    const double area = b.height * b.width / (375.0 * 500.0);
    EXPECT_GE(area, 0.07);
    EXPECT_LE(area, 1.0);
  }
}

TEST(Jpeg, RoundTripScaledDecodeAndCorruptFiles) {
  const Image im = testing::index_image(300, 64);
  const std::string bytes = encode_jpeg(im, 95);
  EXPECT_EQ(jpeg_info(bytes, "x").width, 64);
  const Image full = decode_jpeg(bytes, "x");
  const auto c = testing::index_colour(300);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(full.pixels[(32 * 64 + 32) * 3 + k], c[k], 3);
  const Image half = decode_jpeg(bytes, "x", 4);
  EXPECT_EQ(half.width, 16);
  EXPECT_EQ(choose_scale_denom(375, 500, 224, 224), 1);
  EXPECT_EQ(choose_scale_denom(1000, 1200, 224, 224), 4);
  try {
    decode_jpeg(bytes.substr(0, bytes.size() / 2), "cut.jpg");
    FAIL() << "a truncated JPEG must throw";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("cut.jpg"), std::string::npos);
  }
  EXPECT_THROW(decode_jpeg("not a jpeg at all", "junk.jpg"), DataError);
}

TEST(AugmenterFinish, NormalisesWithMeanAndStd) {
  DataConfig config;
  LoaderOptions options;
  options.train = false;
  Augmenter f(config, options);
  auto images = torch::full({1, 3, 2, 2}, 255, torch::kUInt8);
  auto batch = f.finish(images, torch::zeros({1}, torch::kInt64), torch::ones({1}), {0}, 0);
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(batch.images[0][c][1][1].item<double>(), (1.0 - config.mean[c]) / config.std[c], 1e-5);
  EXPECT_FALSE(batch.targets.defined());
}

TEST(AugmenterFinish, MixupMixesImagesAndTargetsWithTheSameLambda) {
  DataConfig config;
  config.mixup_alpha = 0.8;
  config.mean = {0, 0, 0};
  config.std = {1.0 / 255, 1.0 / 255, 1.0 / 255};  // normalised value == pixel value
  LoaderOptions options;
  options.num_classes = 4;
  Augmenter f(config, options);
  auto images = torch::tensor({10.f, 110.f}).view({2, 1, 1, 1}).expand({2, 3, 2, 2}).contiguous();
  auto batch = f.finish(images, torch::tensor({1, 3}, torch::kInt64), torch::ones({2}), {1, 2}, 99);
  ASSERT_TRUE(batch.targets.defined());
  const double lam = batch.targets[0][1].item<double>();  // sample 0 = lam * (label 1) + (1 - lam) * (label 3)
  EXPECT_NEAR(batch.targets[0][3].item<double>(), 1 - lam, 1e-6);
  EXPECT_NEAR(batch.images[0][0][0][0].item<double>(), lam * 10 + (1 - lam) * 110, 1e-3);
  EXPECT_NEAR(batch.targets.sum(1)[1].item<double>(), 1.0, 1e-6);
}

TEST(AugmenterFinish, Bf16ImagesAreTheFp32BatchRoundedOnce) {
  // image_dtype bf16: the values autocast would give the patch embedding (normalise and mix in
  // fp32, one rounding), for plain, mixup and cutmix batches alike.
  auto images = torch::randint(0, 256, {4, 3, 8, 8}, torch::kUInt8);
  const auto labels = torch::tensor({0, 1, 2, 3}, torch::kInt64);
  for (const auto& [mixup, cutmix] : std::vector<std::pair<double, double>>{{0, 0}, {0.8, 0}, {0, 1.0}}) {
    DataConfig config;
    config.mixup_alpha = mixup;
    config.cutmix_alpha = cutmix;
    LoaderOptions options;
    options.num_classes = 4;
    Augmenter fp32(config, options);
    options.image_dtype = torch::kBFloat16;
    Augmenter bf16(config, options);
    const std::vector<uint64_t> keys{1, 2, 3, 4};
    auto a = fp32.finish(images, labels, torch::ones({4}), keys, 7);
    auto b = bf16.finish(images, labels, torch::ones({4}), keys, 7);
    ASSERT_EQ(b.images.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(b.images, a.images.to(torch::kBFloat16))) << "mixup " << mixup << " cutmix " << cutmix;
    EXPECT_EQ(a.targets.defined(), mixup > 0 || cutmix > 0);
    if (a.targets.defined()) {
      EXPECT_TRUE(torch::equal(a.targets, b.targets));
    }
  }
}

TEST(ResidentAugment, PadCropKeepsPixelsAndPadsWithZeros) {
  // A 1-sample batch whose pixel (y, x) = 8 y + x; after pad-crop every non-zero output pixel is
  // a source pixel shifted by one (dy, dx) for the whole image.
  auto src = torch::arange(64, torch::kUInt8).view({1, 1, 8, 8}).expand({1, 3, 8, 8}).contiguous();
  DataConfig config;
  config.crop_padding = 2;
  config.hflip = false;
  LoaderOptions options;
  options.image_height = options.image_width = 8;
  auto out = Augmenter(config, options).geometry(src, {12345}).to(torch::kInt64);
  int64_t dy = 99, dx = 99;
  for (int64_t y = 0; y < 8; ++y)
    for (int64_t x = 0; x < 8; ++x) {
      const int64_t v = out[0][0][y][x].item<int64_t>();
      if (v == 0) continue;
      if (dy == 99) { dy = v / 8 - y; dx = v % 8 - x; }
      EXPECT_EQ(v, 8 * (y + dy) + (x + dx));
    }
  EXPECT_LE(std::abs(dy), 2);
  EXPECT_LE(std::abs(dx), 2);
}

TEST(Config, ValidateNamesTheKeyAndSuggests) {
  DataConfig c;
  c.dataset = "cifar1O";
  try {
    validate(c);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.dataset"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cifar10"), std::string::npos);
  }
  c = DataConfig{};
  c.rrc_scale = {0.5, 0.1};
  EXPECT_THROW(validate(c), ConfigError);
  c = DataConfig{};
  c.dataset = "image_folder";
  EXPECT_THROW(validate(c), ConfigError);  // no data.path
  EXPECT_NO_THROW(validate(DataConfig{}));
}

TEST(Synthetic, DeterministicBalancedAndSplitsDiffer) {
  SyntheticOptions o;
  o.num_samples = 40;
  const auto a = make_synthetic(o), b = make_synthetic(o);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_EQ(torch::bincount(a.labels).min().item<int64_t>(), 4);
  o.train = false;
  EXPECT_FALSE(torch::equal(a.images, make_synthetic(o).images));
  o.train = true;
  o.seed = 1;
  EXPECT_FALSE(torch::equal(a.images, make_synthetic(o).images));
}

}  // namespace
}  // namespace vit::data

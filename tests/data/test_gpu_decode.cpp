// JPEG decode on the GPU (data.decode: gpu, gpu_decode.h) against the CPU path: nvJPEG's pixels
// against libjpeg-turbo's, the crop-resize kernel against the host resampler bit for bit, the
// loader's crops and flips against the CPU loader for the same seed, progressive and corrupt
// files, and resume mid-epoch. Skips without a GPU or without nvJPEG.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/errors.h"
#include "data/gpu_decode.h"
#include "data/image.h"
#include "data/loader.h"
#include "fixtures.h"

namespace vit::data {
namespace {

using testing::ScratchDir;

std::unique_ptr<GpuDecoder> open_or_skip_reason(std::string* why) {
  if (!torch::cuda::is_available()) {
    *why = "no CUDA device";
    return nullptr;
  }
  return GpuDecoder::open(torch::Device(torch::kCUDA, 0), why);
}

#define OPEN_DECODER_OR_SKIP(name)                                    \
  std::string why_not_;                                               \
  auto name = open_or_skip_reason(&why_not_);                         \
  if (!name) GTEST_SKIP() << "GPU JPEG decode unavailable: " << why_not_

// A photo-like picture (smooth colour waves and an edge) that JPEG keeps close to itself;
// different for every `seed`, so crop boxes and flips show in the pixels.
Image photo(int64_t h, int64_t w, int seed) {
  Image im{h, w, std::vector<uint8_t>(static_cast<size_t>(h * w * 3))};
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        const double v = 128 + 60 * std::sin(0.045 * (c + 1) * x + 0.031 * y + seed) +
                         40 * std::cos(0.07 * y - 0.023 * (c + 2) * x + 0.5 * seed) + (x > w / 3 + y / 4 ? 20 : -20);
        im.pixels[(y * w + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
  }
  return im;
}

GpuDecodeItem item_of(const std::string& jpeg, int64_t slot, const CropBox& box, bool flip) {
  const JpegInfo info = jpeg_info(jpeg, "test");
  return {slot, jpeg, "test.jpg", info.height, info.width, {box, flip}};
}

torch::Tensor planar_of(const Image& im) {  // [3, H, W] uint8
  return torch::from_blob(const_cast<uint8_t*>(im.pixels.data()), {im.height, im.width, 3}, torch::kUInt8)
      .permute({2, 0, 1})
      .contiguous();
}

TEST(GpuDecode, PixelsMatchLibjpeg) {
  OPEN_DECODER_OR_SKIP(gpu);
  const std::string jpeg = encode_jpeg(photo(375, 500, 1), 90);
  std::vector<GpuDecodeItem> items{item_of(jpeg, 0, {0, 0, 375, 500}, false)};  // the whole image, as is
  auto out = torch::zeros({1, 3, 375, 500}, torch::TensorOptions(torch::kUInt8).device(torch::kCUDA));
  auto handoff = gpu->run_on_stream([&] {
    EXPECT_TRUE(gpu->decode(items, out, Interpolation::kBilinear).empty());
    return std::vector<torch::Tensor>{out};
  });
  out = gpu->take(handoff)[0];
  auto diff = (out[0].cpu().to(torch::kInt32) - planar_of(decode_jpeg(jpeg, "test")).to(torch::kInt32)).abs();
  const double mean = diff.to(torch::kFloat64).mean().item<double>();
  const int max = diff.max().item<int>();
  std::printf("%s: |nvJPEG - libjpeg| mean %.3f, max %d\n", gpu->describe().c_str(), mean, max);
  // IDCT and chroma upsampling differ between decoders (H200's hardware decoder: mean 1.8,
  // max 11 levels on this picture): a couple of levels on average, more at colour edges.
  EXPECT_LT(mean, 2.5);
  EXPECT_LE(max, 24);
}

TEST(GpuDecode, CropResizeKernelEqualsHostResamplerBitForBit) {
  OPEN_DECODER_OR_SKIP(gpu);
  // Progressive JPEGs (and CMYK, and what the batched decoder refuses) are decoded by libjpeg-turbo:
  // the kernel then sees the host's pixels, and must give the host resampler's bytes.
  const Image source = photo(301, 417, 2);
  const std::string jpeg = encode_jpeg(source, 90, /*progressive=*/true);
  const Image decoded = decode_jpeg(jpeg, "test");
  std::vector<std::pair<CropBox, bool>> cases = {
      {{0, 0, 301, 417}, false},         {{10.5, 20.25, 150, 201.5}, true}, {{-4, 3, 32, 32}, false},
      {{200, 300, 101, 117}, true},      {{50, 60, 7, 9}, false},           {{0, 0, 301, 417}, true},
      {{37.2, 11.9, 240.4, 380.1}, false}};
  for (bool bicubic : {false, true}) {
    for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{32, 32}, {64, 48}, {224, 224}}) {
      std::vector<GpuDecodeItem> items;
      for (size_t k = 0; k < cases.size(); ++k) items.push_back(item_of(jpeg, k, cases[k].first, cases[k].second));
      auto out = torch::zeros({static_cast<int64_t>(cases.size()), 3, h, w},
                              torch::TensorOptions(torch::kUInt8).device(torch::kCUDA));
      const auto interp = bicubic ? Interpolation::kBicubic : Interpolation::kBilinear;
      gpu->run_on_stream([&] {
        EXPECT_TRUE(gpu->decode(items, out, interp).empty());
        return std::vector<torch::Tensor>{out};
      });
      torch::cuda::synchronize();
      auto got = out.cpu();
      for (size_t k = 0; k < cases.size(); ++k) {
        auto want = torch::empty({3, h, w}, torch::kUInt8);
        resample_into(decoded, cases[k].first, cases[k].second, h, w, interp, want.data_ptr<uint8_t>());
        const auto differ = got[k].ne(want).sum().item<int64_t>();
        EXPECT_EQ(differ, 0) << "case " << k << " at " << h << "x" << w << (bicubic ? " bicubic" : " bilinear");
      }
    }
  }
}

// An ImageFolder of photo-like JPEGs of several sizes under dir/train/<class>/, streamed.
struct Folder {
  ScratchDir dir;
  DataConfig config;
  explicit Folder(int64_t count, const std::string& decode) {
    for (int64_t i = 0; i < count; ++i) {
      const std::string cls = dir / ("train/c" + std::to_string(i % 3));
      std::filesystem::create_directories(cls);
      const int64_t h = 96 + (i * 37) % 160, w = 96 + (i * 53) % 200;
      std::ofstream(cls + "/" + std::to_string(1000 + i) + ".jpg", std::ios::binary)
          << encode_jpeg(photo(h, w, static_cast<int>(i)), 90, /*progressive=*/i % 7 == 3);
    }
    config.dataset = "image_folder";
    config.path = config.eval_path = dir / "train";
    config.device_resident = false;
    config.num_classes = 3;
    config.num_workers = 2;
    config.decode = decode;
    config.train_crop = "random_resized_crop";
  }
};

LoaderOptions gpu_options(bool train) {
  LoaderOptions o;
  o.micro_batch_size = 8;
  o.device = torch::Device(torch::kCUDA, 0);
  o.image_height = o.image_width = 64;
  o.num_classes = 3;
  o.train = train;
  o.seed = 7;
  return o;
}

TEST(GpuDecode, LoaderCropsAndFlipsMatchTheCpuPath) {
  OPEN_DECODER_OR_SKIP(gpu);
  gpu.reset();
  for (bool train : {true, false}) {
    Folder on_gpu(40, "gpu"), on_cpu(40, "cpu");
    auto a = make_loader(on_gpu.config, gpu_options(train));
    auto b = make_loader(on_cpu.config, gpu_options(train));
    for (int step = 0; step < 4; ++step) {
      Batch x = a->next(), y = b->next();
      EXPECT_TRUE(torch::equal(x.labels.cpu(), y.labels.cpu()));
      EXPECT_TRUE(torch::equal(x.mask.cpu(), y.mask.cpu()));
      // In units of 0..255: the CPU path decodes with scaled DCT where the crop allows, so the
      // two differ by a few levels; a wrong box or flip would differ by tens.
      auto diff = ((x.images.cpu() - y.images.cpu()).abs() * 0.25 * 255).to(torch::kFloat64);
      for (int64_t i = 0; i < diff.size(0); ++i) {
        const double mean = diff[i].mean().item<double>();
        EXPECT_LT(mean, 4.0) << (train ? "train" : "eval") << " step " << step << " sample " << i;
      }
    }
  }
}

TEST(GpuDecode, ResumeMidEpochIsExact) {
  OPEN_DECODER_OR_SKIP(gpu);
  gpu.reset();
  Folder folder(48, "gpu");
  folder.config.rand_augment = "rand-m9-mstd0.5-inc1";
  folder.config.random_erase_prob = 0.25;
  folder.config.mixup_alpha = 0.8;
  folder.config.cutmix_alpha = 1.0;
  auto whole = make_loader(folder.config, gpu_options(true));
  std::vector<Batch> want;
  for (int step = 0; step < 9; ++step) want.push_back(whole->next());  // across the epoch's end (6 steps)
  auto resumed = make_loader(folder.config, gpu_options(true));
  resumed->seek({0, 4});
  for (int step = 4; step < 9; ++step) {
    Batch got = resumed->next();
    EXPECT_TRUE(torch::equal(got.images.cpu(), want[step].images.cpu())) << "step " << step;
    EXPECT_TRUE(torch::equal(got.targets.cpu(), want[step].targets.cpu())) << "step " << step;
  }
}

// A truncated JPEG, bytes that are not a JPEG, and a good progressive one in a folder.
struct DamagedFolder : Folder {
  DamagedFolder() : Folder(16, "gpu") {
    const std::string good = encode_jpeg(photo(120, 160, 99), 90);
    std::ofstream(dir / "train/c0/0000_truncated.jpg", std::ios::binary) << good.substr(0, good.size() / 2);
    std::ofstream(dir / "train/c1/0000_not_a_jpeg.jpg", std::ios::binary) << "GIF89a, not a JPEG at all";
  }
};

TEST(GpuDecode, CorruptFilesFollowOnCorrupt) {
  OPEN_DECODER_OR_SKIP(gpu);
  gpu.reset();
  {  // skip, training: the whole set in one batch; the two damaged slots hold copies of others
    DamagedFolder folder;
    auto options = gpu_options(true);
    options.micro_batch_size = 18;
    auto loader = make_loader(folder.config, options);
    Batch batch = loader->next();
    auto images = batch.images.cpu().flatten(1);
    int64_t copies = 0;
    for (int64_t i = 0; i < 18; ++i) {
      for (int64_t j = 0; j < i; ++j) copies += torch::equal(images[i], images[j]) ? 1 : 0;
    }
    EXPECT_EQ(copies, 2);
    EXPECT_EQ(batch.mask.sum().item<float>(), 18.f);
  }
  {  // skip, evaluation: the two damaged files have mask 0, the rest count
    DamagedFolder folder;
    folder.config.eval_path = folder.config.path;
    auto options = gpu_options(false);
    options.micro_batch_size = 18;
    auto loader = make_loader(folder.config, options);
    Batch batch = loader->next();
    EXPECT_EQ(batch.mask.sum().item<float>(), 16.f);
  }
  {  // fail: a DataError naming the file
    DamagedFolder folder;
    folder.config.on_corrupt = "fail";
    auto options = gpu_options(false);
    options.micro_batch_size = 18;
    auto loader = make_loader(folder.config, options);
    try {
      loader->next();
      ADD_FAILURE() << "no error for a damaged file";
    } catch (const DataError& e) {
      const std::string what = e.what();
      EXPECT_TRUE(what.find("0000_truncated.jpg") != std::string::npos ||
                  what.find("0000_not_a_jpeg.jpg") != std::string::npos)
          << what;
      EXPECT_NE(what.find("data.on_corrupt"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace vit::data

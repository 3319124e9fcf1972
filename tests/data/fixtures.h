// Test fixtures for data/: images whose pixels encode their index, written in each on-disk
// layout the readers accept, and a scratch folder removed at the end of the test.
//
// Index i is painted as a constant colour (16 (i mod 16) + 8, 16 (i/16 mod 16) + 8,
// 16 (i/256) + 8): constant images survive crops, flips, resizing and JPEG (within +-7), so a
// batch can be decoded back to indices with augmentation on. Up to 4,096 indices.
#pragma once

#include <ftw.h>

#include <array>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/image.h"
#include "data/loader.h"

namespace vit::data::testing {

inline std::array<uint8_t, 3> index_colour(int64_t i) {
  return {static_cast<uint8_t>(16 * (i % 16) + 8), static_cast<uint8_t>(16 * ((i / 16) % 16) + 8),
          static_cast<uint8_t>(16 * (i / 256) + 8)};
}

inline Image index_image(int64_t i, int64_t size = 32) {
  Image image{size, size, std::vector<uint8_t>(static_cast<size_t>(size * size * 3))};
  const auto c = index_colour(i);
  for (int64_t p = 0; p < size * size; ++p) {
    for (int k = 0; k < 3; ++k) image.pixels[p * 3 + k] = c[k];
  }
  return image;
}

// Reads the centre pixel of each sample of a normalised batch back to its index.
inline std::vector<int64_t> decode_indices(const Batch& batch, const DataConfig& config) {
  auto images = batch.images.to(torch::kCPU).to(torch::kFloat64);
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < b; ++i) {
    int64_t digits[3];
    for (int c = 0; c < 3; ++c) {
      const double v = (images[i][c][h / 2][w / 2].item<double>() * config.std[c] + config.mean[c]) * 255.0;
      digits[c] = std::lround((v - 8.0) / 16.0);
    }
    out.push_back(digits[0] + 16 * digits[1] + 256 * digits[2]);
  }
  return out;
}

class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("vit_data_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  // Not std::filesystem::remove_all: in this LibTorch wheel that symbol binds to a copy inside
  // libtorch.so that crashes. nftw removes depth-first instead.
  ~ScratchDir() {
    nftw(path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
         FTW_DEPTH | FTW_PHYS);
  }
  std::string path() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A tar-shard data config: train and eval shard patterns, `classes` classes.
inline DataConfig tar_config(const std::string& train, const std::string& eval, int64_t classes) {
  DataConfig config;
  config.dataset = "tar_shards";
  config.path = train;
  config.eval_path = eval;
  config.num_classes = classes;
  return config;
}

}  // namespace vit::data::testing

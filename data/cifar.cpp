// CIFAR binary reader (see cifar.h).
#include "data/cifar.h"

#include <filesystem>
#include <fstream>
#include <cstring>
#include <vector>

#include "core/errors.h"
#include "core/files.h"
#include "core/strings.h"

namespace vit::data {
namespace fs = std::filesystem;
namespace {

std::string resolve_folder(const std::string& path, const std::string& folder_name, const std::string& probe) {
  VIT_CHECK(fs::exists(path), DataError, "data.path: ", path, " does not exist; point it at the ", folder_name,
            " folder of the downloaded data set");
  if (fs::exists(fs::path(path) / probe)) return path;
  if (fs::exists(fs::path(path) / folder_name / probe)) return (fs::path(path) / folder_name).string();
  VIT_THROW(DataError, path, ": no ", probe, " here or in ", folder_name,
            "/; point data.path at the folder holding the .bin files");
}

}  // namespace

TensorSet read_cifar(const std::string& path, bool train, int variant, bool fine_labels) {
  const bool c100 = variant == 100;
  const std::string folder = resolve_folder(path, c100 ? "cifar-100-binary" : "cifar-10-batches-bin",
                                            c100 ? (train ? "train.bin" : "test.bin")
                                                 : (train ? "data_batch_1.bin" : "test_batch.bin"));
  std::vector<std::string> files;
  if (c100) {
    files = {train ? "train.bin" : "test.bin"};
  } else if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    files = {"test_batch.bin"};
  }
  const int64_t label_bytes = c100 ? 2 : 1;
  const int64_t record = label_bytes + kCifarPixels;
  std::vector<std::string> contents;
  int64_t total = 0;
  for (const auto& f : files) {
    const std::string file = (fs::path(folder) / f).string();
    VIT_CHECK(fs::exists(file), DataError, file, ": missing; a CIFAR-", variant, " download has ", join(files, ", "));
    contents.push_back(read_file(file));
    const int64_t size = static_cast<int64_t>(contents.back().size());
    VIT_CHECK(size > 0 && size % record == 0, DataError, file, ": ", size, " bytes is not a whole number of ", record,
              "-byte CIFAR-", variant, " records (truncated or not a CIFAR-", variant,
              " file); download it again");
    total += size / record;
  }
  TensorSet set{torch::empty({total, 3, 32, 32}, torch::kUInt8), torch::empty({total}, torch::kInt64)};
  uint8_t* pixels = set.images.data_ptr<uint8_t>();
  int64_t* labels = set.labels.data_ptr<int64_t>();
  const int64_t max_label = c100 ? (fine_labels ? 100 : 20) : 10;
  int64_t n = 0;
  for (size_t f = 0; f < contents.size(); ++f) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(contents[f].data());
    const int64_t count = static_cast<int64_t>(contents[f].size()) / record;
    for (int64_t i = 0; i < count; ++i, ++n) {
      const uint8_t* r = bytes + i * record;
      const int64_t label = c100 ? (fine_labels ? r[1] : r[0]) : r[0];
      VIT_CHECK(label < max_label, DataError, fs::path(folder) / files[f], ": record ", i, " has label ", label,
                ", outside 0..", max_label - 1, "; the file is not CIFAR-", variant);
      labels[n] = label;
      std::memcpy(pixels + n * kCifarPixels, r + label_bytes, kCifarPixels);
    }
  }
  return set;
}

void write_cifar10_file(const std::string& file, const TensorSet& set) {
  auto images = set.images.contiguous();
  VIT_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == 32 && images.size(3) == 32, DataError,
            "CIFAR records hold 3x32x32 images");
  std::string out(static_cast<size_t>(set.size() * (1 + kCifarPixels)), '\0');
  const uint8_t* pixels = images.data_ptr<uint8_t>();
  auto labels_tensor = set.labels.to(torch::kInt64).contiguous();
  const int64_t* labels = labels_tensor.data_ptr<int64_t>();
  for (int64_t i = 0; i < set.size(); ++i) {
    char* r = out.data() + i * (1 + kCifarPixels);
    r[0] = static_cast<char>(labels[i]);
    std::memcpy(r + 1, pixels + i * kCifarPixels, kCifarPixels);
  }
  write_file_atomic(file, out);
}

}  // namespace vit::data

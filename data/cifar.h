// CIFAR-10 / CIFAR-100 in the binary layout of the official downloads, read whole into memory.
//
//   cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin: records of 1 label byte + 3,072
//   pixel bytes (red plane, green plane, blue plane, each 32x32 row-major), 10,000 per file.
//   cifar-100-binary/train.bin, test.bin: records of 2 label bytes (coarse, fine) + 3,072.
// `path` may be that folder or the folder holding it. A missing file, or one whose size is not
// a whole number of records, is a DataError naming the file.
#pragma once

#include <string>

#include "data/source.h"

namespace vit::data {

constexpr int64_t kCifarPixels = 3 * 32 * 32;

// variant: 10 or 100; fine_labels picks CIFAR-100's fine (100) or coarse (20) label.
TensorSet read_cifar(const std::string& path, bool train, int variant, bool fine_labels = true);

// Writes records in the same layout (tests convert data to it; tools may too).
void write_cifar10_file(const std::string& file, const TensorSet& set);

}  // namespace vit::data

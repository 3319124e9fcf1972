// The two shapes a data set takes inside data/:
//  - TensorSet: every image decoded, uint8 [N, 3, H, W] with int64 labels [N] (CIFAR binary,
//    synthetic, a small ImageFolder decoded once). The device-resident loader serves it.
//  - EncodedSource: samples read one at a time as encoded JPEG bytes (ImageFolder files,
//    tar-shard members). The streaming loader decodes them in worker threads.
// Neither knows about ranks or batches; the samplers do.
#pragma once

#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace vit::data {

struct TensorSet {
  torch::Tensor images;  // uint8 [N, 3, H, W], CPU
  torch::Tensor labels;  // int64 [N], CPU
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Random access to encoded samples. read() and label() are called from several worker threads
// at once and must be thread-safe.
class EncodedSource {
 public:
  virtual ~EncodedSource() = default;
  virtual int64_t size() const = 0;
  virtual int64_t label(int64_t index) const = 0;
  virtual std::string read(int64_t index) const = 0;  // throws DataError naming the file
  virtual std::string name(int64_t index) const = 0;  // for messages: a path or shard:member
  virtual int64_t num_classes() const = 0;
};

}  // namespace vit::data

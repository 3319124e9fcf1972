// The loader the trainer uses: make_loader(config, options) gives this rank's batches.
//
// Two implementations sit behind Loader (chosen in loader.cpp, see data/README.md):
//  - resident (resident_loader.cpp): synthetic, CIFAR binary, and a small ImageFolder decoded
//    once; the uint8 set lives on options.device and whole batches are augmented there.
//  - streaming (stream_loader.cpp): large ImageFolder and tar shards; worker threads decode and
//    augment into pinned host batches, a bounded queue holds them, the copy to the device runs
//    on a side stream.
// Both share the sampler rules of Note [Sharding and tail rule] (sampler.h) and
// Note [Tar shard sharding] (shards.h), and the device-side finish (augment.h).
//
// Contract: next(), position(), seek() and the wait statistics are called from one thread
// (the training loop). Every random decision is a pure function of (seed, epoch, step, rank):
// seek({e, s}) followed by next() gives bit-for-bit the batch an uninterrupted run gives there.
#pragma once

#include <cstdint>
#include <memory>

#include <torch/torch.h>

#include "core/json.h"
#include "data/config.h"

namespace vit::data {

struct LoaderOptions {
  int rank = 0;
  int world_size = 1;
  int64_t micro_batch_size = 32;
  uint64_t seed = 0;
  torch::Device device = torch::kCPU;
  int64_t image_height = 32, image_width = 32;  // the model's input size (resize if the stored size differs)
  int64_t num_classes = 10;                     // for soft targets (mixup/cutmix)
  bool train = true;  // train: shuffle + augment + drop tail; eval: fixed order, pad + mask
  // dtype of Batch::images. bf16 when the model casts its input to bf16 anyway (bf16 autocast on a
  // GPU): the same values (normalised in fp32, rounded once), half the memory of the batch.
  torch::ScalarType image_dtype = torch::kFloat32;
  // train: micro-batches accumulated per optimiser step; an epoch holds whole steps (sampler.h).
  int64_t micro_batches_per_step = 1;
  // train, tar shards: the ranks whose data order the run follows (0: world_size), kept by a run
  // resumed on another number of ranks (Note [Tar shard sharding]).
  int plan_world_size = 0;
};

struct Batch {
  torch::Tensor images;   // [B, C, H, W] normalised (mean/std), LoaderOptions::image_dtype, on options.device
  torch::Tensor labels;   // int64 [B] on device (for mixed batches: the unmixed labels)
  torch::Tensor targets;  // float32 [B, K] soft targets when mixup/cutmix applied to this batch, else undefined
  torch::Tensor mask;     // float32 [B]: 1 real sample, 0 padding (eval tail); all ones in training
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t step = 0;  // step within epoch of the NEXT batch
  Json to_json() const;
  static LoaderPosition from_json(const Json& json);  // throws DataError on a malformed entry
};

class Loader {
 public:
  virtual ~Loader() = default;
  virtual int64_t steps_per_epoch() const = 0;  // identical on every rank
  virtual int64_t num_samples() const = 0;      // size of the whole split (all ranks)
  virtual Batch next() = 0;  // the batch at position(), then advances (rolls over to the next epoch)
  virtual LoaderPosition position() const = 0;
  virtual void seek(const LoaderPosition& p) = 0;  // exact resume: the next batch is the one an uninterrupted run would produce there
  virtual double wait_seconds() const = 0;  // time next() spent waiting for data since reset_wait_stats()
  virtual void reset_wait_stats() = 0;
};

// Validates `config`, opens the split (train or eval per options.train) and returns this
// rank's loader. Throws ConfigError / DataError naming the key or file.
std::unique_ptr<Loader> make_loader(const DataConfig& config, const LoaderOptions& options);

}  // namespace vit::data

// ShardedSampler: closed-form positions; see Note [Sharding and tail rule] in sampler.h.
#include "data/sampler.h"

#include "core/errors.h"
#include "data/random.h"

namespace vit::data {

ShardedSampler::ShardedSampler(const SamplerOptions& options) : options_(options) {
  VIT_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size, ConfigError,
            "rank ", options.rank, " is outside world_size ", options.world_size);
  VIT_CHECK(options.micro_batch_size >= 1, ConfigError, "micro_batch_size must be >= 1, got ",
            options.micro_batch_size);
  VIT_CHECK(options.num_samples >= 0, DataError, "negative sample count");
  VIT_CHECK(options.micro_batches_per_step >= 1, ConfigError, "micro_batches_per_step must be >= 1, got ",
            options.micro_batches_per_step);
  const int64_t global = options.world_size * options.micro_batch_size;
  const int64_t a = options.micro_batches_per_step;
  const int64_t k = options.train ? options.repeats : 1;
  VIT_CHECK(k >= 1 && (global * a) % k == 0, ConfigError, "data.repeated_augment: ", k,
            " must divide the global batch of an optimiser step (", global * a,
            " = world size x train.micro_batch_size x accumulated micro-batches); choose a divisor or set "
            "train.global_batch_size to a multiple of ", k);
  steps_per_epoch_ =
      options.train ? k * options.num_samples / (global * a) * a : (options.num_samples + global - 1) / global;
}

std::vector<int64_t> ShardedSampler::epoch_order(int64_t epoch) const {
  if (!options_.train) {
    std::vector<int64_t> order(static_cast<size_t>(options_.num_samples));
    for (int64_t i = 0; i < options_.num_samples; ++i) order[i] = i;
    return order;
  }
  return permutation(options_.num_samples,
                     mix_key({options_.seed, tag(Stream::kShuffle), static_cast<uint64_t>(epoch)}));
}

std::vector<int64_t> ShardedSampler::indices(int64_t epoch, int64_t step) const {
  VIT_CHECK(step >= 0 && step < steps_per_epoch_, DataError, "step ", step, " is outside the epoch (",
            steps_per_epoch_, " steps)");
  const int64_t b = options_.micro_batch_size;
  const int64_t first = first_position(step, options_.rank, options_.world_size, b);
  std::vector<int64_t> out(static_cast<size_t>(b));
  if (!options_.train) {
    for (int64_t j = 0; j < b; ++j) out[j] = first + j < options_.num_samples ? first + j : -1;
    return out;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (cached_epoch_ != epoch) {
    cached_order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  // Repeated augmentation (Note [Sharding and tail rule]): the optimiser step's m distinct entries, k times.
  const int64_t global = options_.world_size * b * options_.micro_batches_per_step;
  const int64_t distinct = global / options_.repeats;
  for (int64_t j = 0; j < b; ++j) {
    const int64_t p = first + j;
    out[j] = cached_order_[p / global * distinct + p % global % distinct];
  }
  return out;
}

}  // namespace vit::data

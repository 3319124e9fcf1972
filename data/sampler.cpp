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
  steps_per_epoch_ =
      options.train ? options.num_samples / (global * a) * a : (options.num_samples + global - 1) / global;
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
  const int64_t first = (step * options_.world_size + options_.rank) * b;
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
  for (int64_t j = 0; j < b; ++j) out[j] = cached_order_[first + j];
  return out;
}

}  // namespace vit::data

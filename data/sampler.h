// ShardedSampler: which sample indices this rank reads at (epoch, step), in closed form.
//
// Note [Sharding and tail rule]
// Positions in an epoch are numbered p = (step * world_size + rank) * micro_batch_size + j,
// j in [0, micro_batch_size): step s is one global batch, cut into world_size consecutive
// micro-batches, one per rank. An optimiser step of A accumulated micro-batches covers the
// G = world_size * micro_batch_size * A positions [t G, (t + 1) G), whatever the number of ranks:
// the same global batch gives the same positions per optimiser step on 1 rank or on 4.
//  - train: p indexes a permutation of 0..N-1 drawn from (seed, epoch). Every rank runs
//    floor(N / G) * A steps of full micro-batches; the last N mod G positions of the permutation
//    are dropped this epoch (different samples each epoch, because the permutation changes).
//    So an epoch ends with an optimiser step, and no step mixes two epochs' permutations (which
//    could show a sample twice in one step).
//  - repeated augmentation (k = data.repeated_augment > 1, timm's RASampler spread): an epoch
//    shows each sample k times. Optimiser step t holds the m = G / k permutation entries
//    [t m, (t + 1) m), each k times: position r of the step (r in [0, G)) reads entry
//    t m + (r mod m), so the copies of a sample sit m positions apart (on different ranks when
//    m >= micro_batch_size) and each is augmented differently (its key is its position).
//    floor(k N / G) * A steps per epoch; G must be a multiple of k.
//  - eval: p indexes 0..N-1 in order (no shuffle). Every rank runs
//    ceil(N / (world_size * micro_batch_size)) steps; positions p >= N are padding (index -1,
//    mask 0), so across ranks every sample appears exactly once with mask 1.
// This class knows nothing about files, threads or tensors; it does no I/O.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace vit::data {

struct SamplerOptions {
  int64_t num_samples = 0;
  int rank = 0;
  int world_size = 1;
  int64_t micro_batch_size = 1;
  uint64_t seed = 0;
  bool train = true;  // shuffle + drop tail; false: fixed order + pad
  int64_t micro_batches_per_step = 1;  // train: an epoch holds whole optimiser steps (gradient accumulation)
  int64_t repeats = 1;                 // train: repeated augmentation, each sample this many times per epoch
};

// The position in the epoch's global order of slot 0 of this rank's micro-batch `step`
// (Note [Sharding and tail rule]); slot j is at position + j. Augmentation keys come from it.
inline int64_t first_position(int64_t step, int rank, int world_size, int64_t micro_batch_size) {
  return (step * world_size + rank) * micro_batch_size;
}

// What the streaming loader asks of a sampler: this rank's sample indices at (epoch, step).
// ShardedSampler (random-access sets) and ShardPlanner (tar shards) implement it.
class BatchPlanner {
 public:
  virtual ~BatchPlanner() = default;
  virtual int64_t steps_per_epoch() const = 0;
  // micro_batch_size indices into the data set; eval padding slots are -1.
  // `step` must be in [0, steps_per_epoch()). Thread-safe.
  virtual std::vector<int64_t> indices(int64_t epoch, int64_t step) const = 0;
};

class ShardedSampler : public BatchPlanner {
 public:
  explicit ShardedSampler(const SamplerOptions& options);

  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  int64_t num_samples() const { return options_.num_samples; }
  std::vector<int64_t> indices(int64_t epoch, int64_t step) const override;

  // The permutation used for `epoch` in training (identity for eval). Exposed for tests.
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  SamplerOptions options_;
  int64_t steps_per_epoch_ = 0;
  mutable std::mutex mutex_;  // guards the one-epoch cache below
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace vit::data

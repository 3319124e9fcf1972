// Tar shards in the WebDataset convention, and how they are split over ranks.
//
// A sample is the group of members sharing a key (the member path up to the first dot of its
// file name): `000123.jpg` + `000123.cls` (class index as ASCII text). Other extensions
// (.json, .txt) are ignored. Shards are named by a brace pattern (`train/{00000..01023}.tar`),
// by a list file (one shard path per line, relative to the list's folder; # comments), or
// a single .tar. Opening indexes every shard (headers and .cls members only, no image data),
// in parallel, so each rank knows every shard's sample count without talking to the others.
//
// Note [Tar shard sharding]
// Shard s (in the listed order) belongs to rank s % world_size. A rank's shards are never
// split across ranks, so each rank reads whole files sequentially.
//  - train, epoch e: the rank's shards in an order drawn from (seed, e, rank), their samples in
//    stored order, through a shuffle buffer of data.shuffle_buffer samples drawn from
//    (seed, e, rank). Every rank runs floor(min_r count_r / (micro_batch_size * A)) * A steps
//    (A micro-batches per optimiser step, so an epoch holds whole optimiser steps), where
//    count_r is the number of samples in rank r's shards; a rank with more samples drops the
//    rest of its stream that epoch (different samples each epoch). When shards do not divide
//    evenly over ranks (or hold unequal counts), the larger ranks drop up to the difference
//    every epoch: use a shard count that is a multiple of world_size.
//  - eval: the rank's shards in order, no shuffle; every rank runs
//    ceil(max_r count_r / micro_batch_size) steps, padding (-1, mask 0) after its samples.
//    Every sample appears exactly once with mask 1.
// Fewer shards than ranks is an error. Within a rank, worker threads decode whole batches of
// this one stream, so the order does not depend on data.num_workers and resume is exact.
//
// A run resumed on another number of ranks keeps the data order of the P ranks it started with
// (plan_world_size; the trainer keeps P in its checkpoints). The streams above are the P plan
// ranks'; optimiser step t takes from plan rank p its micro-batches t * A_P .. (t + 1) * A_P - 1
// (A_P = global batch / (micro_batch_size * P)), as the P-rank job did. Those G / micro_batch_size
// micro-batches are numbered i = a * P + p (a: the plan rank's micro-batch in the step), and the
// job's rank r takes, for its micro-batch a' of the step, number i = a' * W + r: the same samples
// at the same global positions (first_position), so the same augmentation and, up to the order of
// float sums, the same steps as the P-rank run, every sample of the epoch once. With W = P each
// rank reads only its own stream (i = a' * P + r: plan rank r, micro-batch a'); with W != P a rank
// reads from several plan ranks' shards.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/sampler.h"
#include "data/source.h"

namespace vit::data {

// "a/{000..012}.tar" -> a/000.tar .. a/012.tar (zero padding kept); a list file -> its lines;
// "x.tar" -> itself. Throws DataError naming the pattern or file.
std::vector<std::string> expand_shard_spec(const std::string& spec);

class TarShardSource : public EncodedSource {
 public:
  // A shard with a damaged end (cut short, see list_tar) is a DataError, or with `skip_damaged`
  // (data.on_corrupt: skip) a warning (when `warn`) naming it, its samples before the damage kept.
  TarShardSource(const std::string& spec, int num_threads, bool skip_damaged = false, bool warn = true);
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  int64_t label(int64_t index) const override { return samples_[index].label; }
  std::string read(int64_t index) const override;
  std::string name(int64_t index) const override;
  int64_t num_classes() const override { return num_classes_; }
  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }
  // Samples are numbered shard by shard: shard s holds [shard_begin(s), shard_begin(s + 1)).
  int64_t shard_begin(int64_t shard) const { return shard_begin_[shard]; }

 private:
  struct Sample {
    int32_t shard;
    int64_t offset, size, label;
    std::string key;
  };
  std::vector<std::string> shards_;
  std::vector<Sample> samples_;
  std::vector<int64_t> shard_begin_;  // num_shards + 1 entries
  int64_t num_classes_ = 0;
};

struct ShardPlanOptions {
  int rank = 0;
  int world_size = 1;
  int64_t micro_batch_size = 1;
  uint64_t seed = 0;
  bool train = true;
  int64_t shuffle_buffer = 1;
  int64_t micro_batches_per_step = 1;  // train: an epoch holds whole optimiser steps
  int plan_world_size = 0;             // train: the plan's ranks P (0: world_size); see the Note
};

class ShardPlanner : public BatchPlanner {
 public:
  ShardPlanner(const TarShardSource& source, const ShardPlanOptions& options);
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  std::vector<int64_t> indices(int64_t epoch, int64_t step) const override;
  // Plan rank p's whole stream for `epoch` (before the tail is dropped; eval: this rank's
  // shards in order). Exposed for tests.
  std::vector<int64_t> epoch_stream(int64_t epoch, int plan_rank) const;
  std::vector<int64_t> epoch_stream(int64_t epoch) const { return epoch_stream(epoch, options_.rank); }

 private:
  int64_t num_shards_ = 0;
  int plan_ranks_ = 1;             // P
  int64_t plan_accumulation_ = 1;  // A_P: the plan ranks' micro-batches per optimiser step
  std::vector<int64_t> shard_begin_;
  ShardPlanOptions options_;
  int64_t steps_per_epoch_ = 0;
  mutable std::mutex mutex_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::map<int, std::vector<int64_t>> cached_streams_;  // by plan rank
};

}  // namespace vit::data

// Tar-shard listing, indexing and the per-rank plan (see Note [Tar shard sharding] in shards.h).
#include "data/shards.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "core/strings.h"
#include "data/random.h"
#include "data/tar.h"

namespace vit::data {
namespace fs = std::filesystem;
namespace {

bool is_image_ext(std::string ext) {
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == "jpg" || ext == "jpeg";
}

}  // namespace

std::vector<std::string> expand_shard_spec(const std::string& spec) {
  const size_t open = spec.find('{');
  if (open != std::string::npos) {
    const size_t close = spec.find('}', open);
    const size_t dots = spec.find("..", open);
    VIT_CHECK(close != std::string::npos && dots != std::string::npos && dots < close, ConfigError, "data.path: '", spec,
              "' is not a brace pattern like train/{00000..01023}.tar");
    const std::string lo = spec.substr(open + 1, dots - open - 1), hi = spec.substr(dots + 2, close - dots - 2);
    const bool digits = !lo.empty() && !hi.empty() && std::all_of(lo.begin(), lo.end(), ::isdigit) &&
                        std::all_of(hi.begin(), hi.end(), ::isdigit);
    VIT_CHECK(digits && std::stoll(lo) <= std::stoll(hi), ConfigError, "data.path: '", spec,
              "': the range in braces must be two non-negative integers, low..high");
    const size_t width = lo.size();
    std::vector<std::string> out;
    for (int64_t i = std::stoll(lo); i <= std::stoll(hi); ++i) {
      std::string n = std::to_string(i);
      if (n.size() < width) n = std::string(width - n.size(), '0') + n;
      for (const auto& rest : expand_shard_spec(spec.substr(close + 1))) out.push_back(spec.substr(0, open) + n + rest);
    }
    return out;
  }
  if (spec.empty() || ends_with(spec, ".tar")) return {spec};
  VIT_CHECK(fs::is_regular_file(spec), ConfigError, "data.path: ", spec,
            " does not exist (expected a brace pattern, a .tar or a list file of shard paths)");
  std::vector<std::string> out;
  for (std::string line : split(read_file(spec), '\n')) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    out.push_back(fs::path(line).is_absolute() ? line : (fs::path(spec).parent_path() / line).string());
  }
  VIT_CHECK(!out.empty(), ConfigError, spec, ": shard list file names no shards");
  return out;
}

TarShardSource::TarShardSource(const std::string& spec, int num_threads, bool skip_damaged, bool warn)
    : shards_(expand_shard_spec(spec)) {
  std::vector<std::vector<Sample>> per_shard(shards_.size());
  std::vector<std::string> errors(shards_.size()), damages(shards_.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t s = next++; s < shards_.size(); s = next++) {
      try {
        const auto members = list_tar(shards_[s], skip_damaged ? &damages[s] : nullptr);
        std::map<std::string, size_t> by_key;  // key -> position in per_shard[s]
        std::vector<std::pair<bool, bool>> have;  // (image, label) per sample
        for (const auto& m : members) {
          const size_t slash = m.name.rfind('/');
          const size_t dot = m.name.find('.', slash == std::string::npos ? 0 : slash + 1);
          if (dot == std::string::npos) continue;
          const std::string key = m.name.substr(0, dot), ext = m.name.substr(dot + 1);
          if (!is_image_ext(ext) && ext != "cls") continue;
          auto [it, inserted] = by_key.emplace(key, per_shard[s].size());
          if (inserted) {
            per_shard[s].push_back({static_cast<int32_t>(s), 0, 0, -1, key});
            have.emplace_back(false, false);
          }
          Sample& sample = per_shard[s][it->second];
          if (ext == "cls") {
            const std::string text = trim(read_file_range(shards_[s], m.offset, m.size));
            const bool number = !text.empty() && std::all_of(text.begin(), text.end(), ::isdigit);
            VIT_CHECK(number, DataError, shards_[s], ": ", m.name, " holds '", text, "', not a class index");
            sample.label = std::stoll(text);
            have[it->second].second = true;
          } else {
            sample.offset = m.offset;
            sample.size = m.size;
            have[it->second].first = true;
          }
        }
        if (!damages[s].empty()) {  // the sample the damage cut in two goes with the rest
          size_t kept = 0;
          for (size_t i = 0; i < have.size(); ++i)
            if (have[i].first && have[i].second) per_shard[s][kept++] = per_shard[s][i];
          per_shard[s].resize(kept);
          have.assign(kept, {true, true});
        }
        for (size_t i = 0; i < have.size(); ++i) {
          VIT_CHECK(have[i].first && have[i].second, DataError, shards_[s], ": sample '", per_shard[s][i].key,
                    "' has no ", have[i].first ? ".cls label" : ".jpg image", "; every sample needs both");
        }
        VIT_CHECK(!per_shard[s].empty(), DataError, shards_[s], ": shard holds no .jpg + .cls samples");
      } catch (const std::exception& e) {
        errors[s] = e.what();
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, num_threads); ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  for (const auto& e : errors) VIT_CHECK(e.empty(), DataError, e);
  for (size_t s = 0; s < shards_.size(); ++s)
    if (warn && !damages[s].empty())
      log_warn(damages[s], "; using its ", per_shard[s].size(), " whole sample(s) (data.on_corrupt: skip)");
  shard_begin_.push_back(0);
  for (auto& shard : per_shard) {
    for (auto& sample : shard) {
      num_classes_ = std::max(num_classes_, sample.label + 1);
      samples_.push_back(std::move(sample));
    }
    shard_begin_.push_back(static_cast<int64_t>(samples_.size()));
  }
}

std::string TarShardSource::read(int64_t index) const {
  const Sample& s = samples_[index];
  return read_file_range(shards_[s.shard], s.offset, s.size);
}

std::string TarShardSource::name(int64_t index) const {
  return shards_[samples_[index].shard] + ":" + samples_[index].key;
}

ShardPlanner::ShardPlanner(const TarShardSource& source, const ShardPlanOptions& options)
    : num_shards_(source.num_shards()), options_(options) {
  const int64_t b = options.micro_batch_size;
  const int64_t a = std::max<int64_t>(1, options.micro_batches_per_step);
  // Training follows the plan ranks' streams; evaluation this job's ranks' shards.
  plan_ranks_ = options.train && options.plan_world_size > 0 ? options.plan_world_size : options.world_size;
  VIT_CHECK(num_shards_ >= plan_ranks_, DataError, "data.path: ", num_shards_, " tar shards cannot be split over ",
            plan_ranks_, " ranks (each rank reads whole shards); repack into at least world_size shards, ideally a multiple");
  VIT_CHECK(options.world_size * a % plan_ranks_ == 0, DataError, "tar shards: the ", options.world_size * a,
            " micro-batches of an optimiser step cannot follow the data order of ", plan_ranks_,
            " ranks (the run started on them); keep the global batch, or start a new run.dir");
  plan_accumulation_ = options.world_size * a / plan_ranks_;
  for (int64_t s = 0; s <= num_shards_; ++s) shard_begin_.push_back(source.shard_begin(s));
  int64_t min_count = INT64_MAX, max_count = 0;
  for (int r = 0; r < plan_ranks_; ++r) {
    int64_t count = 0;
    for (int64_t s = r; s < num_shards_; s += plan_ranks_) count += shard_begin_[s + 1] - shard_begin_[s];
    min_count = std::min(min_count, count);
    max_count = std::max(max_count, count);
  }
  // Train: whole optimiser steps of the plan ranks (each takes b x A_P samples a step); in this
  // job's micro-batches, A of them a step.
  steps_per_epoch_ = options.train ? min_count / (b * plan_accumulation_) * a : (max_count + b - 1) / b;
  if (options.train && max_count > min_count && options.rank == 0) {
    log_info("data: tar shards hold ", min_count, "..", max_count, " samples per rank; each epoch every rank uses ",
             min_count / (b * plan_accumulation_) * b * plan_accumulation_,
             " (a shard count that is a multiple of world_size balances them)");
  }
}

std::vector<int64_t> ShardPlanner::epoch_stream(int64_t epoch, int plan_rank) const {
  const int ranks = options_.train ? plan_ranks_ : options_.world_size;
  std::vector<int64_t> shards;
  for (int64_t s = plan_rank; s < num_shards_; s += ranks) shards.push_back(s);
  std::vector<int64_t> stream;
  if (!options_.train) {
    for (int64_t s : shards) {
      for (int64_t i = shard_begin_[s]; i < shard_begin_[s + 1]; ++i) stream.push_back(i);
    }
    return stream;
  }
  const uint64_t e = static_cast<uint64_t>(epoch), r = static_cast<uint64_t>(plan_rank);
  const auto order = permutation(static_cast<int64_t>(shards.size()), mix_key({options_.seed, tag(Stream::kShards), e, r}));
  Rng rng(mix_key({options_.seed, tag(Stream::kShuffle), e, r}));
  const size_t capacity = static_cast<size_t>(options_.shuffle_buffer);
  std::vector<int64_t> buffer;
  buffer.reserve(capacity);
  for (int64_t o : order) {
    const int64_t s = shards[o];
    for (int64_t i = shard_begin_[s]; i < shard_begin_[s + 1]; ++i) {
      if (buffer.size() < capacity) {
        buffer.push_back(i);
        continue;
      }
      const int64_t j = rng.below(static_cast<int64_t>(capacity));
      stream.push_back(buffer[j]);
      buffer[j] = i;
    }
  }
  while (!buffer.empty()) {
    const int64_t j = rng.below(static_cast<int64_t>(buffer.size()));
    stream.push_back(buffer[j]);
    buffer[j] = buffer.back();
    buffer.pop_back();
  }
  return stream;
}

std::vector<int64_t> ShardPlanner::indices(int64_t epoch, int64_t step) const {
  VIT_CHECK(step >= 0 && step < steps_per_epoch_, DataError, "step ", step, " is outside the epoch (",
            steps_per_epoch_, " steps)");
  // Which plan rank's micro-batch this is (the Note): evaluation and W = P give (rank, step).
  int plan_rank = options_.rank;
  int64_t plan_step = step;
  if (options_.train) {
    const int64_t a = std::max<int64_t>(1, options_.micro_batches_per_step);
    const int64_t number = step % a * options_.world_size + options_.rank;
    plan_rank = static_cast<int>(number % plan_ranks_);
    plan_step = step / a * plan_accumulation_ + number / plan_ranks_;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t cache_key = options_.train ? epoch : 0;
  if (cached_epoch_ != cache_key) {
    cached_streams_.clear();
    cached_epoch_ = cache_key;
  }
  auto it = cached_streams_.find(plan_rank);
  if (it == cached_streams_.end()) it = cached_streams_.emplace(plan_rank, epoch_stream(cache_key, plan_rank)).first;
  const std::vector<int64_t>& stream = it->second;
  const int64_t b = options_.micro_batch_size;
  std::vector<int64_t> out(static_cast<size_t>(b), -1);
  for (int64_t j = 0; j < b; ++j) {
    const int64_t p = plan_step * b + j;
    if (p < static_cast<int64_t>(stream.size())) out[j] = stream[p];
  }
  return out;
}

}  // namespace vit::data

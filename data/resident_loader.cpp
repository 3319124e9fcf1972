// The resident loader and the one-time decode of small ImageFolder sets (see resident_loader.h).
#include "data/resident_loader.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "data/augment.h"
#include "data/image.h"
#include "data/random.h"
#include "data/sampler.h"
#include "data/transforms.h"
#include "data/wait_clock.h"

namespace vit::data {
namespace {

using Clock = std::chrono::steady_clock;

class ResidentLoader final : public Loader {
 public:
  ResidentLoader(TensorSet set, const DataConfig& config, const LoaderOptions& options)
      : options_(options),
        sampler_({set.size(), options.rank, options.world_size, options.micro_batch_size, options.seed, options.train,
                  options.micro_batches_per_step, config.repeated_augment}),
        augmenter_(config, options) {
    const torch::Device store = config.device_resident ? options.device : torch::Device(torch::kCPU);
    images_ = set.images.to(store);
    labels_ = set.labels.to(store);
    ones_ = torch::ones({options.micro_batch_size}, torch::TensorOptions(torch::kFloat32).device(options.device));
    reset_wait_stats();
  }

  int64_t steps_per_epoch() const override { return sampler_.steps_per_epoch(); }
  int64_t num_samples() const override { return sampler_.num_samples(); }
  LoaderPosition position() const override { return position_; }

  void seek(const LoaderPosition& p) override {
    VIT_CHECK(p.epoch >= 0 && p.step >= 0 && p.step < steps_per_epoch(), DataError, "loader position (epoch ",
              p.epoch, ", step ", p.step, ") is outside an epoch of ", steps_per_epoch(), " steps");
    position_ = p;
  }

  Batch next() override {
    const auto start = Clock::now();
    const int64_t b = options_.micro_batch_size;
    const auto ids = sampler_.indices(position_.epoch, position_.step);
    auto index = torch::empty({b}, torch::kInt64);
    auto mask = torch::empty({b}, torch::kFloat32);
    for (int64_t j = 0; j < b; ++j) {
      index.data_ptr<int64_t>()[j] = ids[j] < 0 ? 0 : ids[j];
      mask.data_ptr<float>()[j] = ids[j] < 0 ? 0.f : 1.f;
    }
    auto images = images_.index_select(0, to_device_async(index, images_.device()));
    auto labels = labels_.index_select(0, to_device_async(index, images_.device()));
    if (images_.is_cpu() && !options_.device.is_cpu()) {  // host-memory store: copy the uint8 batch
      images = to_device_async(images, options_.device);
      labels = to_device_async(labels, options_.device);
    }
    // Keys of the samples' positions in the epoch's global order (augment.h): the same on any number of ranks.
    const int64_t first = first_position(position_.step, options_.rank, options_.world_size, b);
    std::vector<uint64_t> keys(static_cast<size_t>(b));
    for (int64_t j = 0; j < b; ++j) keys[j] = sample_key(options_.seed, position_.epoch, first + j);
    auto augmented = augmenter_.geometry(images, keys);
    auto batch = augmenter_.finish(augmented, labels, options_.train ? ones_ : to_device_async(mask, options_.device),
                                   keys, mix_key({options_.seed, tag(Stream::kMix), static_cast<uint64_t>(position_.epoch),
                                                  static_cast<uint64_t>(first)}));
    if (++position_.step == steps_per_epoch()) position_ = {position_.epoch + 1, 0};
    wait_.add_since(start);
    return batch;
  }

  double wait_seconds() const override { return wait_.seconds(); }
  void reset_wait_stats() override { wait_.reset(); }

 private:
  LoaderOptions options_;
  ShardedSampler sampler_;
  Augmenter augmenter_;
  torch::Tensor images_, labels_, ones_;
  LoaderPosition position_;
  WaitClock wait_;
};

}  // namespace

std::unique_ptr<Loader> make_resident_loader(TensorSet set, const DataConfig& config, const LoaderOptions& options) {
  return std::make_unique<ResidentLoader>(std::move(set), config, options);
}

std::optional<TensorSet> decode_all(const EncodedSource& source, int num_threads, bool fail_on_corrupt) {
  const int64_t n = source.size();
  if (n == 0) return std::nullopt;
  JpegInfo first;
  try {
    first = jpeg_info(source.read(0), source.name(0));
  } catch (const DataError&) {
    return std::nullopt;  // the streaming path applies the corrupt-file policy per sample
  }
  if (n * 3 * first.height * first.width > kMaxResidentBytes) return std::nullopt;
  auto images = torch::empty({n, 3, first.height, first.width}, torch::kUInt8);
  std::vector<char> keep(static_cast<size_t>(n), 1);
  std::atomic<int64_t> next{0};
  std::atomic<bool> other_size{false};
  std::vector<std::string> errors(static_cast<size_t>(std::max(1, num_threads)));
  const int64_t plane = first.height * first.width;
  auto work = [&](int t) {
    try {
      for (int64_t i = next++; i < n && !other_size; i = next++) {
        const std::string bytes = source.read(i);
        Image image;
        try {
          image = decode_jpeg(bytes, source.name(i));
        } catch (const DataError& e) {
          VIT_CHECK(!fail_on_corrupt, DataError, e.what(), "; set data.on_corrupt: skip to skip such files");
          log_warn("data: skipping ", e.what());
          keep[i] = 0;
          continue;
        }
        if (image.height != first.height || image.width != first.width) {
          other_size = true;
          break;
        }
        uint8_t* dst = images.data_ptr<uint8_t>() + i * 3 * plane;
        for (int64_t p = 0; p < plane; ++p) {
          for (int c = 0; c < 3; ++c) dst[c * plane + p] = image.pixels[p * 3 + c];
        }
      }
    } catch (const std::exception& e) {
      errors[t] = e.what();
      next = n;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, num_threads); ++t) threads.emplace_back(work, t);
  for (auto& t : threads) t.join();
  for (const auto& e : errors) VIT_CHECK(e.empty(), DataError, e);
  if (other_size) return std::nullopt;
  auto labels = torch::empty({n}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) labels.data_ptr<int64_t>()[i] = source.label(i);
  const int64_t kept = std::count(keep.begin(), keep.end(), 1);
  if (kept == n) return TensorSet{images, labels};
  log_warn("data: skipped ", n - kept, " corrupt images of ", n);
  auto keep_index = torch::nonzero(torch::from_blob(keep.data(), {n}, torch::kChar)).view({-1});
  return TensorSet{images.index_select(0, keep_index), labels.index_select(0, keep_index)};
}

}  // namespace vit::data

// The streaming loader (see stream_loader.h). Threading contract: the training thread issues
// jobs and consumes results; workers only pop jobs and push results, under mutex_. A seek
// raises min_valid_seq_ so results of jobs issued before it are dropped when they arrive.
#include "data/stream_loader.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "data/augment.h"
#include "data/device_copy.h"
#include "data/image.h"
#include "data/random.h"
#include "data/sampler.h"
#include "data/transforms.h"
#include "data/wait_clock.h"

namespace vit::data {
namespace {

using Clock = std::chrono::steady_clock;

struct Job {
  int64_t seq, epoch, step;
};

struct HostBatch {
  torch::Tensor images, labels, mask;  // uint8 [B, 3, H, W], int64 [B], float [B]; pinned on CUDA
  std::exception_ptr error;
};

class StreamLoader final : public Loader {
 public:
  StreamLoader(std::shared_ptr<const EncodedSource> source, std::shared_ptr<const BatchPlanner> planner,
               const DataConfig& config, const LoaderOptions& options)
      : source_(std::move(source)),
        planner_(std::move(planner)),
        config_(config),
        options_(options),
        interpolation_(parse_interpolation(config.resize_interpolation)),
        augmenter_(config, options),
        copier_(options.device),
        depth_(std::max(config.prefetch_batches, config.num_workers)) {
    reset_wait_stats();
    for (int64_t t = 0; t < config.num_workers; ++t) workers_.emplace_back([this] { worker_loop(); });
  }

  ~StreamLoader() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    jobs_cv_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int64_t steps_per_epoch() const override { return planner_->steps_per_epoch(); }
  int64_t num_samples() const override { return source_->size(); }
  LoaderPosition position() const override { return position_; }

  void seek(const LoaderPosition& p) override {
    VIT_CHECK(p.epoch >= 0 && p.step >= 0 && p.step < steps_per_epoch(), DataError, "loader position (epoch ",
              p.epoch, ", step ", p.step, ") is outside an epoch of ", steps_per_epoch(), " steps");
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.clear();
    results_.clear();
    copier_.discard();
    min_valid_seq_ = next_issue_seq_;
    next_consume_seq_ = next_issue_seq_;
    position_ = issue_position_ = p;
  }

  Batch next() override {
    const auto start = Clock::now();
    std::vector<torch::Tensor> device;
    if (copier_.pending() && prefetched_seq_ == next_consume_seq_) {
      device = copier_.finish();
      issue_jobs();
    } else {
      issue_jobs();
      HostBatch host = take_result(next_consume_seq_);
      if (host.error) std::rethrow_exception(host.error);
      copier_.start({host.images, host.labels, host.mask});
      device = copier_.finish();
    }
    ++next_consume_seq_;
    const LoaderPosition at = position_;
    if (++position_.step == steps_per_epoch()) position_ = {position_.epoch + 1, 0};
    prefetch_copy();
    wait_.add_since(start);
    const int64_t first = first_position(at.step, options_.rank, options_.world_size, options_.micro_batch_size);
    return augmenter_.finish(device[0], device[1], device[2], keys(at.epoch, first),
                             mix_key({options_.seed, tag(Stream::kMix), static_cast<uint64_t>(at.epoch),
                                      static_cast<uint64_t>(first)}));
  }

  double wait_seconds() const override { return wait_.seconds(); }
  void reset_wait_stats() override { wait_.reset(); }

 private:
  // Keeps depth_ batches issued ahead of the consumer (training thread).
  void issue_jobs() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (next_issue_seq_ - next_consume_seq_ < depth_) {
        jobs_.push_back({next_issue_seq_++, issue_position_.epoch, issue_position_.step});
        if (++issue_position_.step == steps_per_epoch()) issue_position_ = {issue_position_.epoch + 1, 0};
      }
    }
    jobs_cv_.notify_all();
  }

  HostBatch take_result(int64_t seq) {
    std::unique_lock<std::mutex> lock(mutex_);
    results_cv_.wait(lock, [&] { return results_.count(seq) > 0; });
    HostBatch out = std::move(results_[seq]);
    results_.erase(seq);
    return out;
  }

  // When the next batch is already decoded, start its copy now so it overlaps this step.
  void prefetch_copy() {
    HostBatch host;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = results_.find(next_consume_seq_);
      if (it == results_.end() || it->second.error) return;
      host = std::move(it->second);
      results_.erase(it);
    }
    copier_.start({host.images, host.labels, host.mask});
    prefetched_seq_ = next_consume_seq_;
  }

  void worker_loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        jobs_cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (stop_) return;
        job = jobs_.front();
        jobs_.pop_front();
      }
      HostBatch batch;
      try {
        batch = produce(job);
      } catch (...) {
        batch.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (job.seq < min_valid_seq_) continue;
        results_[job.seq] = std::move(batch);
      }
      results_cv_.notify_all();
    }
  }

  // The augmentation keys of the micro-batch whose slot 0 is at `first` (augment.h).
  std::vector<uint64_t> keys(int64_t epoch, int64_t first) const {
    std::vector<uint64_t> out(static_cast<size_t>(options_.micro_batch_size));
    for (size_t j = 0; j < out.size(); ++j) out[j] = sample_key(options_.seed, epoch, first + static_cast<int64_t>(j));
    return out;
  }

  // One sample into `out` (3 planes of H x W): the geometry step of augment.h on the host.
  // Throws DataError when the JPEG does not decode.
  void decode_sample(const std::string& bytes, const std::string& name, uint64_t key, uint8_t* out) const {
    const JpegInfo info = jpeg_info(bytes, name);
    const int64_t h = options_.image_height, w = options_.image_width;
    const GeometryDraw draw = draw_geometry(augmenter_.policy(), key, info.height, info.width);
    // A pad-crop box may leave the image (zeros there): no scaled decode for it.
    const bool scalable = !(options_.train && config_.train_crop == "pad_crop");
    const int denom = scalable ? choose_scale_denom(draw.box.height, draw.box.width, h, w) : 1;
    const Image image = decode_jpeg(bytes, name, denom);
    resample_into(image, denom == 1 ? draw.box : scale_box(draw.box, info.height, info.width, image), draw.flip, h, w,
                  interpolation_, out);
  }

  HostBatch produce(const Job& job) {
    const int64_t b = options_.micro_batch_size, h = options_.image_height, w = options_.image_width;
    const auto ids = planner_->indices(job.epoch, job.step);
    const bool pinned = options_.device.is_cuda();
    HostBatch batch;
    batch.images = torch::empty({b, 3, h, w}, torch::TensorOptions(torch::kUInt8).pinned_memory(pinned));
    batch.labels = torch::zeros({b}, torch::TensorOptions(torch::kInt64).pinned_memory(pinned));
    batch.mask = torch::ones({b}, torch::TensorOptions(torch::kFloat32).pinned_memory(pinned));
    uint8_t* images = batch.images.data_ptr<uint8_t>();
    int64_t* labels = batch.labels.data_ptr<int64_t>();
    float* mask = batch.mask.data_ptr<float>();
    const int64_t sample_bytes = 3 * h * w;
    const auto sample_keys = keys(job.epoch, first_position(job.step, options_.rank, options_.world_size, b));
    std::vector<char> good(static_cast<size_t>(b), 1);
    for (int64_t j = 0; j < b; ++j) {
      uint8_t* slot = images + j * sample_bytes;
      if (ids[j] < 0) {  // eval padding
        std::memset(slot, 0, sample_bytes);
        mask[j] = 0;
        good[j] = 0;
        continue;
      }
      const std::string bytes = source_->read(ids[j]);  // a read error is always fatal
      labels[j] = source_->label(ids[j]);
      try {
        decode_sample(bytes, source_->name(ids[j]), sample_keys[j], slot);
      } catch (const DataError& e) {
        VIT_CHECK(config_.on_corrupt != "fail", DataError, e.what(),
                  "; data.on_corrupt is 'fail' (set it to 'skip' to skip such files)");
        const int64_t count = ++num_corrupt_;
        log_warn("data: skipped ", e.what(), " (", count, " corrupt images skipped so far)");
        std::memset(slot, 0, sample_bytes);
        mask[j] = options_.train ? 1.f : 0.f;
        good[j] = 0;
        labels[j] = options_.train ? labels[j] : 0;
        if (options_.train) good[j] = -1;  // to be replaced below
      }
    }
    if (options_.train) {  // replace skipped samples by the next good one of the batch (cyclic)
      for (int64_t j = 0; j < b; ++j) {
        if (good[j] != -1) continue;
        for (int64_t k = 1; k < b; ++k) {
          const int64_t src = (j + k) % b;
          if (good[src] != 1) continue;
          std::memcpy(images + j * sample_bytes, images + src * sample_bytes, sample_bytes);
          labels[j] = labels[src];
          break;
        }
      }
    }
    return batch;
  }

  std::shared_ptr<const EncodedSource> source_;
  std::shared_ptr<const BatchPlanner> planner_;
  DataConfig config_;
  LoaderOptions options_;
  Interpolation interpolation_;
  Augmenter augmenter_;
  DeviceCopier copier_;
  const int64_t depth_;

  std::mutex mutex_;  // guards jobs_, results_, stop_, min_valid_seq_ and the issue counters
  std::condition_variable jobs_cv_, results_cv_;
  std::deque<Job> jobs_;
  std::map<int64_t, HostBatch> results_;
  bool stop_ = false;
  int64_t next_issue_seq_ = 0, next_consume_seq_ = 0, min_valid_seq_ = 0, prefetched_seq_ = -1;
  LoaderPosition position_, issue_position_;
  std::atomic<int64_t> num_corrupt_{0};
  std::vector<std::thread> workers_;
  WaitClock wait_;
};

}  // namespace

std::unique_ptr<Loader> make_stream_loader(std::shared_ptr<const EncodedSource> source,
                                           std::shared_ptr<const BatchPlanner> planner, const DataConfig& config,
                                           const LoaderOptions& options) {
  return std::make_unique<StreamLoader>(std::move(source), std::move(planner), config, options);
}

}  // namespace vit::data

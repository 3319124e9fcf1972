// The streaming loader (see stream_loader.h). Threading contract: the training thread issues
// jobs and consumes results; workers only pop jobs and push results, under mutex_; with GPU
// decode one more thread takes the results in order, decodes them on the GPU and pushes ready
// batches. A seek raises min_valid_seq_ so results of jobs issued before it are dropped when
// they arrive.
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
#include "data/gpu_decode.h"
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

enum SlotState : int8_t { kGood = 1, kEmpty = 0, kSkipped = -1 };  // kSkipped: training, to be replaced

struct HostBatch {
  torch::Tensor images, labels, mask;  // uint8 [B, 3, H, W], int64 [B], float [B]; pinned on CUDA
  std::vector<GpuDecodeItem> gpu_items;  // GPU decode: the JPEGs still to decode into their slots
  std::vector<int8_t> state;            // SlotState per slot
  std::exception_ptr error;
};

struct ReadyBatch {  // GPU decode: on the device, ready after GpuDecoder::take
  GpuDecoder::Handoff handoff;
  std::exception_ptr error;
};

constexpr size_t kDecodedAhead = 2;  // GPU decode: batches decoded ahead of the consumer

// data.decode: the GPU decoder, or null for CPU decode; the choice (and why) logged by rank 0.
std::unique_ptr<GpuDecoder> choose_decoder(const DataConfig& config, const LoaderOptions& options) {
  const std::string threads = std::to_string(config.num_workers) + " threads";
  const auto say = [&](const std::string& what) {
    if (options.rank == 0) log_info("data: ", options.train ? "train" : "eval", " JPEGs decoded ", what);
  };
  std::string why_not = "data.decode: cpu";
  auto gpu = config.decode == "cpu" ? nullptr : GpuDecoder::open(options.device, &why_not);
  if (gpu) {
    say("on the GPU: " + gpu->describe() + "; " + threads + " read files");
    return gpu;
  }
  VIT_CHECK(config.decode != "gpu", ConfigError, "data.decode: gpu, but ", why_not,
            "; set data.decode: auto or cpu to decode on the CPU");
  say("on the CPU, " + threads + " (" + why_not + ")");
  return nullptr;
}

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
        depth_(std::max(config.prefetch_batches, config.num_workers)),
        gpu_(choose_decoder(config, options)) {
    reset_wait_stats();
    for (int64_t t = 0; t < config.num_workers; ++t) workers_.emplace_back([this] { worker_loop(); });
    if (gpu_) workers_.emplace_back([this] { decode_loop(); });
  }

  ~StreamLoader() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    jobs_cv_.notify_all();
    results_cv_.notify_all();
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
    decoded_.clear();
    copier_.discard();
    min_valid_seq_ = next_issue_seq_;
    next_decode_seq_ = next_issue_seq_;
    next_consume_seq_ = next_issue_seq_;
    position_ = issue_position_ = p;
  }

  Batch next() override {
    const auto start = Clock::now();
    std::vector<torch::Tensor> device;
    if (gpu_) {
      issue_jobs();
      ReadyBatch ready = take_decoded(next_consume_seq_);
      if (ready.error) std::rethrow_exception(ready.error);
      device = gpu_->take(ready.handoff);
    } else if (copier_.pending() && prefetched_seq_ == next_consume_seq_) {
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
    if (!gpu_) prefetch_copy();
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

  ReadyBatch take_decoded(int64_t seq) {
    ReadyBatch out;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      results_cv_.wait(lock, [&] { return decoded_.count(seq) > 0; });
      out = std::move(decoded_[seq]);
      decoded_.erase(seq);
    }
    results_cv_.notify_all();  // room for the decode thread
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

  // GPU decode thread: takes the workers' batches in order, decodes them on the GPU (on the
  // decoder's stream), and keeps up to kDecodedAhead of them ready for next().
  void decode_loop() {
    for (;;) {
      int64_t seq = 0;
      HostBatch host;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        results_cv_.wait(lock, [&] {
          return stop_ || (results_.count(next_decode_seq_) > 0 && decoded_.size() < kDecodedAhead);
        });
        if (stop_) return;
        seq = next_decode_seq_++;
        host = std::move(results_[seq]);
        results_.erase(seq);
      }
      ReadyBatch ready;
      ready.error = host.error;
      if (!ready.error) {
        try {
          ready.handoff = gpu_->run_on_stream([&] { return finish_on_gpu(host); });
        } catch (...) {
          ready.error = std::current_exception();
        }
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (seq < min_valid_seq_) continue;
        decoded_[seq] = std::move(ready);
      }
      results_cv_.notify_all();
    }
  }

  // On the decoder's stream: the JPEGs decoded into their slots, data.on_corrupt for the ones
  // that did not decode, zeros in the slots without an image (evaluation padding, skipped files).
  std::vector<torch::Tensor> finish_on_gpu(HostBatch& host) {
    auto images = torch::empty({options_.micro_batch_size, 3, options_.image_height, options_.image_width},
                               torch::TensorOptions(torch::kUInt8).device(options_.device));
    for (const auto& failure : gpu_->decode(host.gpu_items, images, interpolation_)) {
      skip_corrupt(host, failure.slot, failure.message);
    }
    for (size_t j = 0; j < host.state.size(); ++j) {
      if (host.state[j] != kGood) images[static_cast<int64_t>(j)].zero_();
    }
    const auto moves = replacements(host);
    auto labels = host.labels.to(options_.device, /*non_blocking=*/true);
    auto mask = host.mask.to(options_.device, /*non_blocking=*/true);
    for (const auto& [dst, src] : moves) images[dst].copy_(images[src]);
    return {images, labels, mask};
  }

  // data.on_corrupt for slot j whose JPEG did not decode: fail -> DataError; skip -> warn and
  // count; in training the slot is replaced by another sample of the batch (replacements()),
  // in evaluation its mask is 0.
  void skip_corrupt(HostBatch& batch, int64_t j, const std::string& message) {
    VIT_CHECK(config_.on_corrupt != "fail", DataError, message,
              "; data.on_corrupt is 'fail' (set it to 'skip' to skip such files)");
    const int64_t count = ++num_corrupt_;
    log_warn("data: skipped ", message, " (", count, " corrupt images skipped so far)");
    batch.mask.data_ptr<float>()[j] = options_.train ? 1.f : 0.f;
    if (!options_.train) batch.labels.data_ptr<int64_t>()[j] = 0;
    batch.state[static_cast<size_t>(j)] = options_.train ? kSkipped : kEmpty;
  }

  // Training: each skipped slot takes the next good sample of the batch (cyclic): the
  // (slot, source) pairs, labels already copied on the host; the caller copies the pixels.
  std::vector<std::pair<int64_t, int64_t>> replacements(HostBatch& batch) const {
    std::vector<std::pair<int64_t, int64_t>> out;
    const auto b = static_cast<int64_t>(batch.state.size());
    int64_t* labels = batch.labels.data_ptr<int64_t>();
    for (int64_t j = 0; j < b; ++j) {
      if (batch.state[j] != kSkipped) continue;
      for (int64_t k = 1; k < b; ++k) {
        const int64_t src = (j + k) % b;
        if (batch.state[src] != kGood) continue;
        labels[j] = labels[src];
        out.emplace_back(j, src);
        break;
      }
    }
    return out;
  }

  // The augmentation keys of the micro-batch whose slot 0 is at `first` (augment.h).
  std::vector<uint64_t> keys(int64_t epoch, int64_t first) const {
    std::vector<uint64_t> out(static_cast<size_t>(options_.micro_batch_size));
    for (size_t j = 0; j < out.size(); ++j) out[j] = sample_key(options_.seed, epoch, first + static_cast<int64_t>(j));
    return out;
  }

  // One sample into `out` (3 planes of H x W): the geometry step of augment.h on the host, or,
  // with GPU decode, the JPEG and its draw queued in `batch` for the decode thread. Throws
  // DataError when the JPEG does not decode (or its header does not read).
  void decode_sample(std::string bytes, const std::string& name, uint64_t key, int64_t slot, HostBatch& batch,
                     uint8_t* out) const {
    const JpegInfo info = jpeg_info(bytes, name);
    const int64_t h = options_.image_height, w = options_.image_width;
    const GeometryDraw draw = draw_geometry(augmenter_.policy(), key, info.height, info.width);
    if (gpu_) {
      batch.gpu_items.push_back({slot, std::move(bytes), name, info.height, info.width, draw});
      return;
    }
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
    // With GPU decode the pixels are made on the device (finish_on_gpu): no host images.
    batch.images = torch::empty({gpu_ ? 0 : b, 3, h, w}, torch::TensorOptions(torch::kUInt8).pinned_memory(pinned));
    batch.labels = torch::zeros({b}, torch::TensorOptions(torch::kInt64).pinned_memory(pinned));
    batch.mask = torch::ones({b}, torch::TensorOptions(torch::kFloat32).pinned_memory(pinned));
    uint8_t* images = batch.images.data_ptr<uint8_t>();
    int64_t* labels = batch.labels.data_ptr<int64_t>();
    float* mask = batch.mask.data_ptr<float>();
    const int64_t sample_bytes = 3 * h * w;
    const auto sample_keys = keys(job.epoch, first_position(job.step, options_.rank, options_.world_size, b));
    batch.state.assign(static_cast<size_t>(b), kGood);
    for (int64_t j = 0; j < b; ++j) {
      uint8_t* slot = gpu_ ? nullptr : images + j * sample_bytes;
      if (ids[j] < 0) {  // eval padding
        if (slot) std::memset(slot, 0, sample_bytes);
        mask[j] = 0;
        batch.state[j] = kEmpty;
        continue;
      }
      std::string bytes = source_->read(ids[j]);  // a read error is always fatal
      labels[j] = source_->label(ids[j]);
      try {
        decode_sample(std::move(bytes), source_->name(ids[j]), sample_keys[j], j, batch, slot);
      } catch (const DataError& e) {
        if (slot) std::memset(slot, 0, sample_bytes);
        skip_corrupt(batch, j, e.what());
      }
    }
    if (gpu_) return batch;  // the decode thread finishes it
    for (const auto& [dst, src] : replacements(batch)) {
      std::memcpy(images + dst * sample_bytes, images + src * sample_bytes, sample_bytes);
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
  std::unique_ptr<GpuDecoder> gpu_;  // null: decode on the CPU (worker threads)

  std::mutex mutex_;  // guards jobs_, results_, stop_, min_valid_seq_ and the issue counters
  std::condition_variable jobs_cv_, results_cv_;
  std::deque<Job> jobs_;
  std::map<int64_t, HostBatch> results_;
  std::map<int64_t, ReadyBatch> decoded_;
  bool stop_ = false;
  int64_t next_issue_seq_ = 0, next_consume_seq_ = 0, min_valid_seq_ = 0, prefetched_seq_ = -1, next_decode_seq_ = 0;
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

#include "trainer/trainer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>

#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "core/strings.h"
#include "distributed/consistency.h"
#include "model/kernels/fused_linear.h"
#include "model/npz.h"
#include "model/transfer.h"
#include "trainer/autocast.h"
#include "trainer/device_stats.h"
#include "trainer/step_graph.h"

namespace vit::train {
namespace fs = std::filesystem;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  if (sig == SIGINT) std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Trainer::Trainer(const Config& config, const dist::LaunchInfo& launch) : config_(config), launch_(launch) {
  validate_for_world(config_, launch_.world_size);
  accumulation_ = accumulation_steps(config_, launch_.world_size);

  select_device();

  // Communicators, then agree on the config before anything else is collective.
  host_comm_ = dist::make_communicator(config_.distributed, launch_, torch::kCPU);
  comm_ = device_.is_cuda() ? dist::make_communicator(config_.distributed, launch_, device_) : host_comm_;
  config_yaml_ = to_yaml(config_);
  dist::check_same_config(*host_comm_, config_pairs(config_));

  const bool rank0 = launch_.rank == 0;
  // Nothing is written to run.dir until fit() has accepted the run (resume or a new start): a run
  // refused on the way there leaves the folder as it was.
  data::check_paths(config_.data);

  build_loaders();

  build_model();
  schedule_ = std::make_unique<LrSchedule>(config_.schedule, config_.optim.lr, total_steps_);
  checkpoints_ = std::make_unique<CheckpointManager>(config_.run.dir, config_.checkpoint, launch_.rank,
                                                     launch_.world_size);
  metrics_ = std::make_unique<MetricsLog>(config_.run.dir, config_.logging, rank0, total_steps_);
  profiler_ = std::make_unique<StepProfiler>(config_.run.dir, config_.logging.profile_step, launch_.rank, device_);
  if (rank0 && config_.logging.profile_step > total_steps_)
    log_warn("logging.profile_step: ", config_.logging.profile_step, " is past this run's last step (", total_steps_,
             "); nothing will be profiled");

  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
  loss_sum_ = torch::zeros({}, f32);
  sample_count_ = torch::zeros({}, f32);
  grad_norm_ = torch::zeros({}, f32);

  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);  // Ctrl-C: a checkpoint, then exit 75, as SIGTERM
}

// This rank's device (the GPU of its local index under run.device: auto), its precision and the
// process-wide GPU settings (attention kernel, GEMM autotune, the capture stream of the graph).
void Trainer::select_device() {
  if (config_.run.device == "cpu") {
    device_ = torch::kCPU;
  } else {
    device_ = dist::select_device(launch_);
    VIT_CHECK(config_.run.device != "cuda" || device_.is_cuda(), ConfigError,
              "run.device: cuda was asked for but no GPU is visible to rank ", launch_.rank,
              "; use run.device: auto or cpu");
  }
  bf16_ = config_.train.precision == "bf16" || (config_.train.precision == "auto" && device_.is_cuda());
  VIT_CHECK(!(bf16_ && device_.is_cpu()), ConfigError,
            "train.precision: bf16 autocast is for GPUs; use auto or fp32 on CPU");
  if (device_.is_cuda()) {
    model::set_attention_backend(config_.train.attention);
    model::set_gemm_autotune(config_.train.gemm_autotune);
  }
  if (config_.train.cuda_graph) {
    VIT_CHECK(device_.is_cuda(), ConfigError, "train.cuda_graph: needs a GPU; this rank trains on ", device_.str(),
              "; set train.cuda_graph: false");
    // Before anything touches the GPU: model, gradient hooks, data and capture share one stream.
    use_capture_stream(device_);
    // Cached autocast casts would be freed when the autocast region ends, under the graph's feet.
    at::autocast::set_autocast_cache_enabled(false);
  }
}

// The training and evaluation loaders of this rank's shard, on its device; the steps they make.
void Trainer::build_loaders() {
  data::LoaderOptions lo;
  lo.rank = launch_.rank;
  lo.world_size = launch_.world_size;
  lo.micro_batch_size = config_.train.micro_batch_size;
  lo.seed = config_.run.seed;
  lo.device = device_;
  lo.image_height = config_.model.height();
  lo.image_width = config_.model.width_px();
  lo.num_classes = config_.model.num_classes;
  lo.image_dtype = bf16_ ? torch::kBFloat16 : torch::kFloat32;  // autocast's patch embedding takes bf16
  lo.train = true;
  lo.micro_batches_per_step = accumulation_;
  // Tar shards: a resumed run keeps the data order of the ranks it started on (shards.h).
  data_world_size_ = launch_.world_size;
  if (config_.data.dataset == "tar_shards" && config_.checkpoint.resume) {
    const int saved = data_world_size_of_run(config_.run.dir);
    if (saved > 0) data_world_size_ = saved;
  }
  lo.plan_world_size = data_world_size_;
  train_loader_ = data::make_loader(config_.data, lo);
  lo.plan_world_size = 0;
  lo.train = false;
  eval_loader_ = data::make_loader(config_.data, lo);
  steps_per_epoch_ = train_loader_->steps_per_epoch() / accumulation_;  // whole optimiser steps (sampler.h)
  // A run that cannot finish is a typo: a billion optimiser steps take 11.6 days at a fast 1 ms
  // each (the paper's longest run is half a million); epochs x steps must not overflow either.
  constexpr int64_t kMaxSteps = 1'000'000'000;
  const bool by_epochs = config_.train.steps <= 0;
  VIT_CHECK(by_epochs ? config_.train.epochs <= kMaxSteps / std::max<int64_t>(steps_per_epoch_, 1)
                      : config_.train.steps <= kMaxSteps,
            ConfigError, by_epochs ? str("train.epochs: ", config_.train.epochs, " epochs of ", steps_per_epoch_,
                                         " steps") : str("train.steps: ", config_.train.steps),
            " is more than 10^9 optimiser steps (11.6 days at 1 ms a step), a run that cannot finish; check the value");
  total_steps_ = by_epochs ? config_.train.epochs * steps_per_epoch_ : config_.train.steps;
}

Trainer::~Trainer() = default;

void Trainer::build_model() {
  torch::manual_seed(config_.run.seed);  // identical initial weights on every rank (then broadcast anyway)
  model_ = model::VisionTransformer(config_.model);
  model_->to(device_);
  params_ = model::named_parameters(*model_);
  for (auto& p : params_) param_tensors_.push_back(p.second);
  if (config_.train.ema_decay > 0) {  // filled with the initial weights in fit(), or from the checkpoint
    for (auto& [name, p] : params_) ema_.emplace_back(name, torch::zeros_like(p, p.options().dtype(torch::kFloat32)));
    for (auto& e : ema_) ema_tensors_.push_back(e.second);
  }

  // Gradients as views into communication buckets; the optimiser holds the same views.
  // One process: no gradient buckets, grads freed between steps (as zero_grad(set_to_none=True)),
  // so they take no memory while the forward pass peaks. Under a CUDA graph they are allocated
  // and freed inside the capture, in the graph's pool.
  grad_sync_ = std::make_unique<dist::GradSync>(params_, comm_, config_.distributed, /*keep_buffers=*/false);
  optimizer_ = std::make_unique<Optimizer>(config_.optim, params_, grad_sync_->bucket_buffers());

  // Dropout and stochastic depth draw from per-rank streams.
  torch::manual_seed(config_.run.seed + 1000003ULL * static_cast<uint64_t>(launch_.rank + 1));

  log_info("model: ", config_.model.preset.empty() ? "custom" : config_.model.preset, ", ",
           format_count(static_cast<double>(model::count_parameters(config_.model))), " parameters, ",
           config_.model.grid_h(), "x", config_.model.grid_w(), " patches of ", config_.model.patch_size, " px, head ",
           config_.model.head, "; ", format_count(model::forward_flops_per_image(config_.model)),
           " FLOPs/image forward");
  log_info("job: ", launch_.world_size, " rank(s), device ", device_.str(), ", precision ", bf16_ ? "bf16" : "fp32",
           device_.is_cuda() ? ", attention " + config_.train.attention : std::string(),
           ", micro-batch ", config_.train.micro_batch_size, " x ", accumulation_, " accumulation x ",
           launch_.world_size, " ranks = ", config_.train.micro_batch_size * accumulation_ * launch_.world_size,
           " images/step, ", total_steps_, " steps (", steps_per_epoch_, "/epoch), ", grad_sync_->num_buckets(),
           " gradient bucket(s), backend ", comm_->backend_name());
}

void Trainer::initialise_from_pretrained() {
  std::string source = config_.model.init_from;
  model::NamedTensors weights;
  model::TransferOptions options;
  if (fs::is_directory(source)) {
    source = resolve_checkpoint_dir(source);  // a checkpoint, a checkpoints/ folder or a run.dir
    weights = read_checkpoint_weights(source, config_.model.init_from_ema);
    if (config_.model.init_from_ema) log_info("init_from ", source, ": the weights' moving average (ema.safetensors)");
    // The pretraining run's config tells its patch grid (non-square grids need it).
    if (fs::exists(source + "/config.yaml")) {
      Config pre = load_config(source + "/config.yaml");
      VIT_CHECK(pre.model.patch_size == config_.model.patch_size, ConfigError, "model.init_from: '", source,
                "' was trained with patch_size ", pre.model.patch_size, ", this config has ", config_.model.patch_size,
                "; fine-tuning keeps the patch size (change the image size instead)");
      options.source_grid_h = pre.model.grid_h();
      options.source_grid_w = pre.model.grid_w();
    }
  } else if (config_.model.init_from_ema) {
    VIT_THROW(ConfigError, "model.init_from_ema: '", source, "' is not a checkpoint directory, and only a checkpoint "
              "holds a moving average; set model.init_from_ema: false or name a checkpoint");
  } else if ((ends_with(source, ".safetensors") || ends_with(source, ".npz")) && !fs::exists(source)) {
    VIT_THROW(ConfigError, "model.init_from: '", source, "' does not exist; fix the path");
  } else if (ends_with(source, ".safetensors")) {
    weights = model::read_safetensors(source).tensors;
  } else if (ends_with(source, ".npz")) {
    weights = model::vit_jax_to_timm(model::read_npz(source), source);  // Google's vit_jax checkpoints
  } else {
    VIT_CHECK(fs::exists(source), ConfigError, "model.init_from: '", source,
              "' does not exist; run the pretraining stage first or fix the path");
    VIT_THROW(ConfigError, "model.init_from: '", source,
              "' is neither a checkpoint directory nor a .safetensors or .npz file; check the path");
  }
  auto report = model::load_pretrained(model_, weights, options, source);
  log_info("init_from ", source, ": loaded ", report.loaded.size(), " tensors unchanged");
  for (const auto& r : report.resampled) log_info("  resampled ", r);
  if (!report.dropped.empty()) log_info("  dropped (pretraining head): ", join(report.dropped, ", "));
  if (!report.initialised.empty())
    log_info("  newly initialised (", config_.model.num_classes, " classes, ",
             config_.model.zero_head() ? "head.* zeros" : "head.weight truncated normal",
             config_.model.head == "mlp" ? ", pre_logits.fc.weight truncated normal" : "", "): ",
             join(report.initialised, ", "));
}

torch::Tensor Trainer::compute_loss(const torch::Tensor& logits, const data::Batch& batch) const {
  auto log_probs = torch::log_softmax(logits.to(torch::kFloat32), -1);  // [B, K]
  const double eps = config_.train.label_smoothing;
  const double K = static_cast<double>(logits.size(1));
  torch::Tensor nll;
  if (batch.targets.defined()) {
    nll = -(batch.targets * log_probs).sum(-1);  // mixup / cutmix soft targets
  } else {
    nll = -log_probs.gather(1, batch.labels.unsqueeze(1)).squeeze(1);
  }
  if (eps > 0) nll = (1.0 - eps) * nll - (eps / K) * log_probs.sum(-1);  // label smoothing: uniform share eps
  return nll.mean();
}

void Trainer::forward_backward(const data::Batch& batch, double loss_scale) {
  torch::Tensor loss;
  {
    AutocastGuard autocast(bf16_);
    auto logits = model_->forward(batch.images);
    loss = compute_loss(logits, batch);
  }
  (loss_scale == 1.0 ? loss : loss * loss_scale).backward();
  const double batch_size = static_cast<double>(batch.images.size(0));
  loss_sum_.add_(loss.detach() * batch_size);
  sample_count_.add_(batch_size);
}

void Trainer::optimise() {
  grad_sync_->finish();             // averaged gradients, identical on every rank
  grad_norm_ = optimizer_->step();  // clip + fused update, skipped on device if not finite
  grad_sync_->zero_grad();
  update_ema();
}

void Trainer::micro_step(const data::Batch& batch, int64_t micro) {
  grad_sync_->set_sync(micro == accumulation_ - 1);  // communicate on the last micro-batch only
  // Forward, backward: buckets all-reduce from autograd hooks as their gradients land.
  forward_backward(batch, 1.0 / static_cast<double>(accumulation_));
}

void Trainer::train_step() {
  model_->train();
  lr_ = schedule_->at(step_);
  optimizer_->set_lr(lr_);
  if (config_.train.cuda_graph) {
    graph_step();
  } else {
    for (int64_t micro = 0; micro < accumulation_; ++micro) micro_step(train_loader_->next(), micro);
    optimise();  // finish, clip, update
  }
  ++step_;
}

void Trainer::graph_step() {
  // The graph reads its inputs from static tensors, one set per micro-batch: refill, replay.
  static_batches_.resize(static_cast<size_t>(accumulation_));
  for (auto& slot : static_batches_) {
    data::Batch batch = train_loader_->next();
    if (!slot.images.defined()) {
      slot.images = torch::empty_like(batch.images);
      slot.labels = torch::empty_like(batch.labels);
      slot.targets = torch::empty({batch.labels.size(0), config_.model.num_classes},
                                  batch.images.options().dtype(torch::kFloat32));
    }
    slot.images.copy_(batch.images);
    slot.labels.copy_(batch.labels);
    // Always soft targets, so mixed and unmixed batches run the same graph (same loss value).
    if (batch.targets.defined()) {
      slot.targets.copy_(batch.targets);
    } else {
      slot.targets.zero_().scatter_(1, batch.labels.unsqueeze(1), 1.0);
    }
  }
  // The whole step, every micro-batch included: the collectives of the last one are captured.
  auto body = [this] {
    for (size_t micro = 0; micro < static_batches_.size(); ++micro) {
      micro_step(static_batches_[micro], static_cast<int64_t>(micro));
    }
    optimise();
  };
  if (!graph_ && graph_warmup_steps_ < kGraphWarmupSteps) {
    body();  // eager warm-up steps are real training steps
    ++graph_warmup_steps_;
    return;
  }
  if (!graph_) {
    graph_ = capture_step_graph(body, device_);
    graph_peak_bytes_ = peak_memory_bytes(device_);
    metrics_->message(str("captured the training step as a CUDA graph at step ", step_ + 1));
  }
  graph_->replay();
  // Captured all-reduces are bounded by the collective timeout like eager ones.
  if (launch_.world_size > 1) comm_->watch_current_stream(str("CUDA graph replay of step ", step_ + 1));
}

void Trainer::log_train(std::chrono::steady_clock::time_point interval_start) {
  // Collective on the device communicator: same steps on every rank (Note [Collective order]).
  auto stats = torch::stack({loss_sum_, sample_count_});
  comm_->allreduce(stats, {dist::ReduceOp::kSum})->wait();
  auto host = stats.to(torch::kCPU);
  // Timed after the copy waited for the device: the host may have queued the interval's steps
  // long before the GPU ran them (a CUDA graph step takes the host microseconds).
  const double elapsed_s = seconds_since(interval_start);
  const double loss = host[0].item<double>() / std::max(1.0, host[1].item<double>());
  const double samples = host[1].item<double>();
  const int64_t skipped = optimizer_->skipped_steps().item<int64_t>();
  Json line = Json::object();
  line["split"] = "train";
  line["step"] = step_;
  line["epoch"] = (step_ - 1) / steps_per_epoch_;
  line["loss"] = loss;
  line["lr"] = lr_;
  line["grad_norm"] = grad_norm_.item<double>();
  line["img_per_s"] = samples / std::max(elapsed_s, 1e-9);
  line["img_per_s_per_rank"] = samples / std::max(elapsed_s, 1e-9) / launch_.world_size;
  // Share of the same interval (evaluation and checkpoints left out) spent waiting for data.
  line["data_wait"] = std::min(1.0, train_loader_->wait_seconds() / std::max(elapsed_s, 1e-9));
  line["skipped_steps"] = skipped;
  if (device_.is_cuda()) {
    // Peak of this logging interval (the first one includes start-up and the first step's
    // workspaces), as torch.cuda.max_memory_allocated after reset_peak_memory_stats; with a
    // CUDA graph, at least the peak of the interval that captured it (its pool holds the step's
    // memory for good).
    const auto peak = std::max(peak_memory_bytes(device_), graph_peak_bytes_);
    line["peak_mem_gb"] = peak / (1024.0 * 1024.0 * 1024.0);
    reset_peak_memory(device_);
  }
  metrics_->train(line);
  train_loader_->reset_wait_stats();
  loss_sum_.zero_();
  sample_count_.zero_();
  if (skipped > 0 && config_.distributed.on_nonfinite == "stop") {
    // The gradient was averaged before the check, so every rank reaches this line together.
    VIT_THROW(CommError, "non-finite gradient norm at or before step ", step_,
              " (distributed.on_nonfinite: stop); lower optim.lr or set on_nonfinite: skip");
  }
}

void Trainer::save_checkpoint() {
  checkpoints_->save(step_, params_, optimizer_->state(), ema_, rank_state(), config_yaml_, *host_comm_);
  metrics_->message(str("checkpoint written: ", checkpoints_->root(), " step ", step_));
}

bool Trainer::stop_requested() {
  // A signal may reach some ranks only: agree on it (max over ranks) at a step boundary.
  auto flag = torch::tensor({static_cast<int64_t>(g_stop_signal.load())}, torch::kInt64);
  host_comm_->allreduce(flag, {dist::ReduceOp::kMax})->wait();
  return flag.item<int64_t>() != 0;
}

RunSummary Trainer::fit() {
  RunSummary summary;
  const bool rank0 = launch_.rank == 0;
  const bool resumed = resume();
  if (resumed && step_ >= total_steps_ && run_has_summary()) {
    // Finished before: its files stay as they are, byte for byte.
    if (rank0)
      log_info("run.dir '", config_.run.dir, "' holds a finished run (", step_, " of ", total_steps_,
               " steps; results in summary.json): nothing to do. To train again: --set run.dir=NEW_DIR (with --set "
               "model.init_from=", config_.run.dir, " to start from its weights), or --set checkpoint.resume=false "
               "(moves these outputs to ", config_.run.dir, "/previous/)");
    summary.already_finished = true;
    return summary;
  }
  start_run(resumed);
  const int64_t first_step = step_;
  const double seconds_before = train_seconds_;
  const int64_t eval_every = config_.train.eval_every_steps > 0 ? config_.train.eval_every_steps : steps_per_epoch_;
  const int64_t ckpt_every = config_.checkpoint.every_steps;
  const int64_t log_every = config_.logging.every_steps;

  // Two clocks: train_seconds_ runs while the loop trains and stops for evaluation and
  // checkpoints (whose time is left out of the logged img/s as well).
  auto clock = std::chrono::steady_clock::now();
  auto t_log = clock;
  auto pause_training_clock = [&] {
    wait_for_device(device_);  // the steps queued so far count as training
    train_seconds_ += seconds_since(clock);
  };
  auto outside_interval = [&](bool is_eval, const std::function<void()>& work) {
    pause_training_clock();
    const auto start = std::chrono::steady_clock::now();
    work();
    const auto now = std::chrono::steady_clock::now();
    if (is_eval) eval_seconds_ += std::chrono::duration<double>(now - start).count();
    t_log += now - start;
    clock = now;
  };
  train_loader_->reset_wait_stats();
  while (step_ < total_steps_) {
    profiler_->before_step(step_ + 1);
    train_step();
    profiler_->after_step(step_);
    if (step_ % log_every == 0 || step_ == total_steps_) {
      log_train(t_log);
      t_log = std::chrono::steady_clock::now();
    }
    if (config_.distributed.check_every_steps > 0 && step_ % config_.distributed.check_every_steps == 0)
      dist::check_parameters_in_sync(*comm_, param_tensors_, step_);
    if (step_ % eval_every == 0 && step_ != total_steps_) outside_interval(true, [this] { evaluate(); });
    if (ckpt_every > 0 && step_ % ckpt_every == 0 && step_ != total_steps_)
      outside_interval(false, [this] { save_checkpoint(); });
    if (stop_requested()) {
      metrics_->message(str("stop signal received: writing a checkpoint at step ", step_));
      pause_training_clock();
      save_checkpoint();
      summary.preempted = true;
      break;
    }
  }
  if (!summary.preempted) pause_training_clock();
  profiler_->finish(step_);
  if (!summary.preempted && step_ > first_step) save_checkpoint();
  summary.steps = step_;
  summary.train_seconds = train_seconds_;
  const double images = static_cast<double>(step_ - first_step) * config_.train.micro_batch_size * accumulation_ *
                        launch_.world_size;
  summary.img_per_s = images / std::max(train_seconds_ - seconds_before, 1e-9);
  if (!summary.preempted) {
    const auto start = std::chrono::steady_clock::now();
    summary.final_eval = evaluate();
    eval_seconds_ += seconds_since(start);
  }
  summary.eval_seconds = eval_seconds_;
  metrics_->finish();
  if (launch_.rank == 0 && !summary.preempted) write_summary(summary);
  return summary;
}

// A new run's start (or a resumed one's): weights from init_from or rank 0, the config beside
// the outputs, metrics opened at the current step.
void Trainer::start_run(bool resumed) {
  const bool rank0 = launch_.rank == 0;
  if (!resumed) {
    if (rank0 && !config_.checkpoint.resume && set_aside_earlier_run(config_.run.dir))
      log_warn("checkpoint.resume: false: moved an earlier run's outputs in ", config_.run.dir, " to ",
               config_.run.dir, "/previous/ (replacing any there)");
    if (!config_.model.init_from.empty()) initialise_from_pretrained();
    dist::broadcast_parameters(*comm_, param_tensors_, 0);  // rank 0's weights everywhere
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ema_tensors_.size(); ++i) ema_tensors_[i].copy_(param_tensors_[i]);
  }
  if (rank0) {
    fs::create_directories(config_.run.dir);
    write_file_atomic(config_.run.dir + "/config.yaml", config_yaml_);
  }
  metrics_->open(step_);
}

// summary.json of a finished run (rank 0).
void Trainer::write_summary(const RunSummary& summary) const {
  Json s = Json::object();
  s["steps"] = summary.steps;
  s["train_seconds"] = summary.train_seconds;  // over every resumed part; evaluation and checkpoints left out
  s["eval_seconds"] = summary.eval_seconds;    // this part's evaluations
  s["img_per_s"] = summary.img_per_s;
  const EvalResult& e = summary.final_eval;
  s["eval_accuracy"] = e.model.accuracy;  // fractions (0.935 = 93.5%)
  s["eval_loss"] = e.model.loss;
  if (e.model.flip_tta_accuracy >= 0) s["eval_flip_tta_accuracy"] = e.model.flip_tta_accuracy;
  if (e.has_ema) {
    s["ema_eval_accuracy"] = e.ema.accuracy;
    s["ema_eval_loss"] = e.ema.loss;
    if (e.ema.flip_tta_accuracy >= 0) s["ema_eval_flip_tta_accuracy"] = e.ema.flip_tta_accuracy;
  }
  s["world_size"] = launch_.world_size;
  write_file_atomic(config_.run.dir + "/summary.json", s.dump() + "\n");
}

}  // namespace vit::train

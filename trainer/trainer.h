// The training loop: one Trainer per process, one data-parallel replica per rank.
//
// train_step() reads top to bottom as the phases of one optimiser step:
//   1. sample   micro-batches from this rank's shard (already on the device, augmented)
//   2. forward  under bf16 autocast on GPU, loss in fp32 (label smoothing / mixup targets)
//   3. backward gradients land in bucket views; full buckets all-reduce while backward goes on
//   4. finish   wait for the last buckets: gradients are averaged and identical on all ranks
//   5. optimise clip by global norm, fused AdamW/SGD (skips the update if the norm is not finite),
//               then the weights' moving average (train.ema_decay)
//   6. record   loss and counts accumulate on the device; read back every logging.every_steps
//
// Collective order (Note [Collective order]): every rank calls the same collectives in the
// same order because every decision that leads to one (log, eval, checkpoint, stop) is a
// function of the step count or of a value already reduced over ranks.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "core/json.h"
#include "data/loader.h"
#include "distributed/communicator.h"
#include "distributed/grad_sync.h"
#include "distributed/runtime.h"
#include "model/vit.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/profiler.h"
#include "trainer/schedule.h"
#include "trainer/step_graph.h"

namespace vit::train {

// Exit status after a SIGTERM/SIGUSR1 stop with a checkpoint written: requeue the job.
constexpr int kExitRequeue = 75;

// One pass over the evaluation split with one set of weights. Accuracies are fractions.
struct EvalScores {
  double loss = 0.0;
  double accuracy = 0.0;
  double flip_tta_accuracy = -1.0;  // train.eval_flip_tta: each image and its mirror image averaged; -1: not run
  int64_t samples = 0;              // counted (padding and skipped corrupt images are not)
};

struct EvalResult {
  EvalScores model;
  EvalScores ema;  // the weights' moving average (train.ema_decay > 0)
  bool has_ema = false;
};

struct RunSummary {
  int64_t steps = 0;
  double train_seconds = 0.0;  // training only: evaluation and checkpoints are left out
  double eval_seconds = 0.0;
  double img_per_s = 0.0;
  EvalResult final_eval;
  bool preempted = false;  // stopped by a signal after writing a checkpoint
  bool already_finished = false;  // run.dir held this run, finished: nothing was done or written
};

class Trainer {
 public:
  Trainer(const Config& config, const dist::LaunchInfo& launch);
  ~Trainer();

  RunSummary fit();
  EvalResult evaluate();

  int64_t total_steps() const { return total_steps_; }

 private:
  void select_device();
  void build_loaders();
  void build_model();
  void start_run(bool resumed);
  void write_summary(const RunSummary& summary) const;
  void initialise_from_pretrained();
  bool resume();
  int64_t check_resumable(const CheckpointData& ckpt) const;
  bool run_has_summary() const;  // rank 0's answer, on every rank: run.dir/summary.json exists
  void train_step();
  void forward_backward(const data::Batch& batch, double loss_scale);
  void optimise();
  void update_ema();
  void swap_ema();  // exchanges the model's weights and the moving average, in place
  EvalScores eval_pass();
  void graph_step();
  void micro_step(const data::Batch& batch, int64_t micro);  // forward + backward of one micro-batch
  // One train metrics line for the steps since `interval_start` (timed until their GPU work is done).
  void log_train(std::chrono::steady_clock::time_point interval_start);
  void save_checkpoint();
  Json rank_state() const;
  // Data position (mapped to this job's ranks), training time and random-number states.
  void restore_rank_state(const CheckpointData& ckpt, int64_t saved_accumulation);
  bool stop_requested();
  torch::Tensor compute_loss(const torch::Tensor& logits, const data::Batch& batch) const;

  Config config_;
  dist::LaunchInfo launch_;
  torch::Device device_ = torch::kCPU;
  bool bf16_ = false;
  std::string config_yaml_;

  model::VisionTransformer model_{nullptr};
  model::NamedTensors params_;
  std::vector<torch::Tensor> param_tensors_;
  model::NamedTensors ema_;  // fp32 moving average of params_, same names; empty when train.ema_decay is 0
  std::vector<torch::Tensor> ema_tensors_;
  std::shared_ptr<dist::Communicator> comm_;       // gradients, metrics (device tensors)
  std::shared_ptr<dist::Communicator> host_comm_;  // control: barriers, flags, checkpoints (CPU, MPI)
  std::unique_ptr<dist::GradSync> grad_sync_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<data::Loader> train_loader_;
  std::unique_ptr<data::Loader> eval_loader_;
  std::unique_ptr<CheckpointManager> checkpoints_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<StepProfiler> profiler_;

  int64_t step_ = 0;  // optimiser steps done
  int64_t total_steps_ = 0;
  int64_t accumulation_ = 1;
  int data_world_size_ = 1;  // tar shards: the ranks whose data order the run follows (shards.h)
  int64_t steps_per_epoch_ = 1;
  double lr_ = 0.0;
  // Device-side accumulators since the last log line.
  torch::Tensor loss_sum_, sample_count_, grad_norm_;
  int64_t last_log_step_ = 0;
  // Training time so far (evaluation and checkpoints left out), carried over a resume.
  double train_seconds_ = 0.0;
  double eval_seconds_ = 0.0;
  // train.cuda_graph: static inputs, the captured step, eager steps before capture.
  static constexpr int kGraphWarmupSteps = 3;
  std::vector<data::Batch> static_batches_;  // one per micro-batch of the step
  std::unique_ptr<StepGraph> graph_;
  int graph_warmup_steps_ = 0;
  // Peak allocated memory of the logging interval that ended with the capture (warm-up steps and
  // the capture itself): the graph's private pool keeps the step's activations reserved while
  // replays allocate nothing, so later intervals report at least this.
  double graph_peak_bytes_ = 0;
};

}  // namespace vit::train

// The experiment configuration: one YAML file per experiment, parsed once into one typed
// struct per component. Each component receives only its own struct (ModelConfig to the model,
// DataConfig to the data library, DistConfig to the communicator, ...).
//
// Loading rules (docs/config.md has the user-facing version):
//   - `base: other.yaml` inherits another file (path relative to this one); maps merge key by
//     key, this file wins. Chains of bases are allowed, cycles are refused.
//   - `--set a.b=value` overrides one key after all files are merged (value parsed as YAML).
//   - `model.preset` fills the model's shape; keys given beside it take precedence.
//   - Unknown keys are errors naming the key path and the file, with the nearest valid key.
//   - Wrong types, out-of-range values and cross-field problems name the key and what to do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/config.h"
#include "distributed/config.h"
#include "distributed/consistency.h"  // ConfigPairs
#include "model/config.h"
#include "trainer/checkpoint.h"  // CheckpointConfig
#include "trainer/metrics.h"     // LoggingConfig
#include "trainer/optimizer.h"   // OptimConfig
#include "trainer/schedule.h"    // ScheduleConfig

namespace vit::train {

struct RunConfig {
  std::string name = "vitrain";
  std::string dir = "runs/vitrain";  // config.yaml, metrics.jsonl, tb/, checkpoints/
  uint64_t seed = 0;
  std::string device = "auto";  // auto (GPU by local rank when there is one) | cpu | cuda
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t steps = 0;  // total optimiser steps; overrides epochs when > 0
  int64_t micro_batch_size = 64;   // per rank, per forward/backward
  int64_t global_batch_size = 0;   // per optimiser step over all ranks; 0 = micro x world size
  double label_smoothing = 0.0;
  std::string precision = "auto";  // auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
  int64_t eval_every_steps = 0;    // 0: at the end of every epoch
  bool cuda_graph = false;         // capture the whole step as a CUDA graph (static shapes, GPU only)
  std::string attention = "auto";  // SDPA kernel on GPU: auto | flash | efficient | cudnn | math
  bool gemm_autotune = true;       // time the weight-gradient GEMM candidates (cuBLASLt's, ATen's mm; model/kernels/fused_linear.h)
  double ema_decay = 0.0;          // > 0: keep an exponential moving average of the weights, evaluated and saved too
  bool eval_flip_tta = false;      // evaluation also averages the predictions of each image and its mirror image
};

// Range and choice checks of the `run` and `train` sections alone (ConfigError naming the key).
void validate(const RunConfig& config);
void validate(const TrainConfig& config);

struct Config {
  RunConfig run;
  model::ModelConfig model;
  data::DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  dist::DistConfig distributed;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  std::string source;  // the file it was loaded from
};

// Loads `path` (following `base:`), applies `overrides` ("a.b=value"), fills and validates
// every section. Throws ConfigError with file, line and key path.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved configuration as YAML (every key, defaults included): written to run.dir and
// into checkpoints.
std::string to_yaml(const Config& config);

// The same as (key path, value) pairs in schema order ("model.depth", "6"): compared across
// ranks (dist::check_same_config) and against a saved run's config on resume.
dist::ConfigPairs config_pairs(const Config& config);

// Every section's own checks (each struct's validate()), then the ones across sections and
// those that need the job's size: global batch divisible by world size x micro batch.
void validate_for_world(const Config& config, int world_size);

// Number of micro-batches accumulated per optimiser step.
int64_t accumulation_steps(const Config& config, int world_size);

// The settings of `now` that differ from `saved` ("optim.lr: 0.001 -> 0.002") and forbid resuming a
// run saved under `saved`: all but where files are, how it computes, logging, evaluation and
// checkpoint cadence (the list: docs/config.md, "Resuming"). The run's length, warmup and batch
// are left to the caller, which compares what they amount to (total and warmup steps, accumulation).
std::vector<std::string> changes_that_block_resume(const Config& saved, const Config& now);

// Every valid key path ("model.depth", ...), for suggestions and docs.
std::vector<std::string> valid_keys();

}  // namespace vit::train

// The Trainer's side of checkpoints: what each rank saves besides the weights (data position,
// training time, random-number states) and how a run resumes, on the same number of ranks or
// another (the data position mapped through optimiser steps; docs/config.md, "Resuming").
#include <filesystem>

#include "core/errors.h"
#include "core/log.h"
#include "core/strings.h"
#include "trainer/trainer.h"

namespace vit::train {
namespace fs = std::filesystem;

namespace {

std::string to_hex(const torch::Tensor& bytes) {
  static const char* hex = "0123456789abcdef";
  auto c = bytes.contiguous().to(torch::kUInt8);
  const uint8_t* p = c.data_ptr<uint8_t>();
  std::string out;
  out.reserve(static_cast<size_t>(c.numel()) * 2);
  for (int64_t i = 0; i < c.numel(); ++i) {
    out += hex[p[i] >> 4];
    out += hex[p[i] & 15];
  }
  return out;
}

torch::Tensor from_hex(const std::string& text) {
  auto t = torch::empty({static_cast<int64_t>(text.size() / 2)}, torch::kUInt8);
  uint8_t* p = t.data_ptr<uint8_t>();
  auto nibble = [](char c) { return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10); };
  for (size_t i = 0; i + 1 < text.size(); i += 2) p[i / 2] = static_cast<uint8_t>(nibble(text[i]) << 4 | nibble(text[i + 1]));
  return t;
}

}  // namespace

Json Trainer::rank_state() const {
  Json s = Json::object();
  s["step"] = step_;
  s["rank"] = launch_.rank;
  s["train_loader"] = train_loader_->position().to_json();
  // What the position counts in: a resume checks that the data and the epoch are the same.
  s["train_samples"] = train_loader_->num_samples();
  s["loader_steps_per_epoch"] = train_loader_->steps_per_epoch();
  s["data_world_size"] = data_world_size_;  // tar shards: the ranks whose data order the run follows
  s["train_seconds"] = train_seconds_;
  at::Generator cpu = torch::globalContext().defaultGenerator(torch::kCPU);  // a handle to the global one
  s["cpu_rng"] = to_hex(cpu.get_state());
  if (device_.is_cuda()) {
    at::Generator gpu = torch::globalContext().defaultGenerator(device_);
    s["cuda_rng"] = to_hex(gpu.get_state());
  }
  return s;
}

void Trainer::restore_rank_state(const CheckpointData& ckpt, int64_t saved_accumulation) {
  const Json& s = ckpt.rank_state;
  const std::string& dir = ckpt.dir;
  // The data position in optimiser steps, which mean the same samples on any number of ranks
  // (every per-sample choice is keyed by the sample's global position); then in this job's
  // micro-batches.
  auto position = data::LoaderPosition::from_json(s.at("train_loader"));
  const int64_t saved_steps = s.at("loader_steps_per_epoch").get<int64_t>();
  VIT_CHECK(s.at("train_samples").get<int64_t>() == train_loader_->num_samples() &&
                saved_steps / saved_accumulation == steps_per_epoch_,
            CheckpointError, "checkpoint '", dir, "' was written over training data of ", s.at("train_samples").get<int64_t>(),
            " samples (", saved_steps / saved_accumulation, " optimiser steps per epoch), this run's data gives ",
            train_loader_->num_samples(), " (", steps_per_epoch_, "); resume on the same data, or use a new run.dir");
  // An epoch holds whole optimiser steps: a position inside one (a checkpoint of an older
  // vitrain under gradient accumulation) would make every later step straddle two epochs.
  VIT_CHECK(position.step % saved_accumulation == 0 && position.step < saved_steps, CheckpointError, "checkpoint '",
            dir, "': its data position (epoch ", position.epoch, ", micro-batch ", position.step,
            ") is not the start of an optimiser step (", saved_steps, " micro-batches an epoch, ", saved_accumulation,
            " per step); it comes from another vitrain or config: use a new run.dir");
  position.step = position.step / saved_accumulation * accumulation_;
  const int64_t saved_plan = s.contains("data_world_size") ? s.at("data_world_size").get<int64_t>() : ckpt.world_size;
  VIT_CHECK(config_.data.dataset != "tar_shards" || saved_plan == data_world_size_, CheckpointError, "checkpoint '",
            dir, "' follows the tar-shard data order of ", saved_plan, " rank(s), the run's other checkpoints that of ",
            data_world_size_, "; it is not this run's: use a new run.dir");
  train_loader_->seek(position);
  train_seconds_ = s.at("train_seconds").get<double>();
  // Dropout and drop path draw from each rank's generator: a rank the checkpoint did not have
  // starts from one seeded by (seed, step, rank).
  auto restore = [&](at::Generator generator, const char* key) {
    if (ckpt.rank_state_is_own && s.contains(key)) {
      generator.set_state(from_hex(s.at(key).get<std::string>()));
    } else {
      generator.set_current_seed(static_cast<uint64_t>(config_.run.seed) * 1000003ULL +
                                 static_cast<uint64_t>(ckpt.step) * 101ULL + static_cast<uint64_t>(launch_.rank));
    }
  };
  restore(torch::globalContext().defaultGenerator(torch::kCPU), "cpu_rng");
  if (device_.is_cuda()) restore(torch::globalContext().defaultGenerator(device_), "cuda_rng");
}

// Refuses a checkpoint whose run had other settings that its state depends on (one ConfigError
// naming each, and what to do); returns the micro-batches per step of the job that wrote it.
int64_t Trainer::check_resumable(const CheckpointData& ckpt) const {
  Config saved;
  try {
    saved = load_config(ckpt.dir + "/config.yaml");
  } catch (const std::exception& e) {
    VIT_THROW(CheckpointError, "checkpoint '", ckpt.dir, "': cannot read the config it was written with: ", e.what());
  }
  auto changes = changes_that_block_resume(saved, config_);
  // The run's length, warmup and batch, as the numbers they give (the data is the same, so is
  // an epoch's length when the batch is).
  // The global batch, whatever the number of ranks: a run written on N ranks resumes on M when
  // M x train.micro_batch_size divides it (gradient accumulation makes up the rest).
  const int64_t saved_accumulation = accumulation_steps(saved, static_cast<int>(ckpt.world_size));
  const int64_t saved_global = saved.train.micro_batch_size * ckpt.world_size * saved_accumulation;
  const int64_t global = config_.train.micro_batch_size * launch_.world_size * accumulation_;
  if (saved_global != global) {
    const int64_t per_step = config_.train.micro_batch_size * launch_.world_size;
    if (!changes.empty() || config_.train.micro_batch_size != saved.train.micro_batch_size) {
      changes.push_back(str("images per optimiser step (train.micro_batch_size x ranks x accumulation): ",
                            saved_global, " -> ", global));
    } else {
      VIT_THROW(ConfigError, "run.dir '", config_.run.dir, "' holds a run with a global batch of ", saved_global,
                " images per step (", ckpt.world_size, " rank(s) x micro-batch ", saved.train.micro_batch_size,
                saved_global / (saved.train.micro_batch_size * ckpt.world_size) > 1 ? " x accumulation" : "",
                "); this job makes ", global, ". ",
                saved_global % per_step == 0
                    ? str("To resume it on ", launch_.world_size, " rank(s): --set train.global_batch_size=",
                          saved_global)
                    : str("Its ", saved_global / config_.train.micro_batch_size, " micro-batches per step cannot be "
                          "shared by ", launch_.world_size, " ranks: resume on a number of ranks that divides ",
                          saved_global / config_.train.micro_batch_size,
                          " with --set train.global_batch_size=", saved_global),
                "; or start another run: --set run.dir=NEW_DIR");
    }
  }
  const int64_t saved_steps_per_epoch = ckpt.rank_state.at("loader_steps_per_epoch").get<int64_t>() / saved_accumulation;
  const int64_t saved_total = saved.train.steps > 0 ? saved.train.steps : saved.train.epochs * saved_steps_per_epoch;
  const LrSchedule saved_schedule(saved.schedule, saved.optim.lr, saved_total);
  if (saved_schedule.warmup_steps() != schedule_->warmup_steps())
    changes.push_back(str("warmup steps (schedule.warmup_steps or warmup_fraction): ", saved_schedule.warmup_steps(),
                          " -> ", schedule_->warmup_steps()));
  if (saved_total != total_steps_ && config_.schedule.name != "constant")
    changes.push_back(str("total steps (train.steps or train.epochs): ", saved_total, " -> ", total_steps_,
                          ", over which the ", config_.schedule.name,
                          " schedule decays (with schedule.name: constant they may change)"));
  VIT_CHECK(changes.empty(), ConfigError, "run.dir '", config_.run.dir, "' holds a run with other settings (",
            join(changes, "; "), "), which its checkpoint step ", ckpt.step,
            " depends on. Keep both: --set run.dir=NEW_DIR (add --set model.init_from=", config_.run.dir,
            " to start from its weights); start over here: --set checkpoint.resume=false (moves its outputs to ",
            config_.run.dir, "/previous/); continue it: restore the old values");
  return saved_accumulation;
}

bool Trainer::resume() {
  if (!config_.checkpoint.resume) return false;  // an earlier run's outputs were set aside at start-up
  CheckpointData ckpt;
  if (!checkpoints_->load_latest(ckpt, *host_comm_)) return false;
  const int64_t saved_accumulation = check_resumable(ckpt);
  // The weights (and their moving average) by name into this model's tensors.
  auto restore = [&](model::NamedTensors& into, const model::NamedTensors& saved, const std::string& file) {
    torch::NoGradGuard no_grad;
    std::map<std::string, torch::Tensor> by_name(saved.begin(), saved.end());
    for (auto& [name, p] : into) {
      auto it = by_name.find(name);
      VIT_CHECK(it != by_name.end() && it->second.sizes().equals(p.sizes()), CheckpointError, "checkpoint '",
                ckpt.dir, "': ", file, " does not fit this model (", name,
                "); the config changed since it was written: use a new run.dir");
      p.copy_(it->second);
    }
  };
  restore(params_, ckpt.weights, "model.safetensors");
  if (!ema_.empty()) {
    VIT_CHECK(!ckpt.ema.empty(), CheckpointError, "checkpoint '", ckpt.dir,
              "' holds no ema.safetensors, and this run keeps a moving average (train.ema_decay); use a new run.dir");
    restore(ema_, ckpt.ema, "ema.safetensors");
  }
  optimizer_->load_state(ckpt.optimizer, ckpt.dir + "/optimizer.safetensors");
  restore_rank_state(ckpt, saved_accumulation);
  step_ = ckpt.step;
  last_log_step_ = step_;
  checkpoints_->repair_latest(step_);
  log_info("resumed from ", ckpt.dir, " at step ", step_);
  return true;
}

bool Trainer::run_has_summary() const {
  auto flag = torch::tensor({launch_.rank == 0 && fs::exists(config_.run.dir + "/summary.json") ? 1 : 0}, torch::kInt32);
  host_comm_->broadcast(flag)->wait();  // root 0
  return flag.item<int>() == 1;
}

}  // namespace vit::train

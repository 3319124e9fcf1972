// Checkpoints: one directory per step under run.dir/checkpoints/, committed atomically.
//
//   checkpoints/step_00001000/
//     model.safetensors      weights under timm's names (rank 0; identical on every rank)
//     optimizer.safetensors  moments and step counters (rank 0; identical on every rank)
//     ema.safetensors        the weights' moving average under timm's names (train.ema_decay > 0)
//     rank_<r>.json          per-rank state: data-loader position, RNG states, counters
//     config.yaml            the resolved config
//     MANIFEST.json          sha256 and size of every file above
//     COMMITTED              written last; a directory without it never loads
//
// Note [Checkpoint commit]: all ranks write into step_N.partial/, meet at a barrier, then rank 0
// writes the manifest, renames the directory to step_N (atomic on one file system), writes
// COMMITTED through a temporary name + fsync + rename, and prunes old checkpoints. A crash at
// any point leaves either the previous committed checkpoints or the new one, never a torn one.
// Loading verifies every checksum; a corrupt or uncommitted checkpoint is refused with the
// reason, and resume falls back to the newest good one.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/json.h"
#include "model/safetensors.h"

namespace vit::dist {
class Communicator;
}

namespace vit::train {

// The YAML section `checkpoint` (trainer/config.h loads it; docs/config.md lists the keys).
struct CheckpointConfig {
  int64_t every_steps = 0;  // 0: only at the end
  int64_t keep = 2;         // newest committed checkpoints kept
  bool resume = true;       // continue from the newest good checkpoint in run.dir
};
// Range and choice checks of the section alone; messages name `checkpoint.<key>` (ConfigError).
void validate(const CheckpointConfig& config);

struct CheckpointData {
  std::string dir;
  int64_t step = 0;
  model::NamedTensors weights;
  model::NamedTensors optimizer;
  model::NamedTensors ema;  // empty when the run keeps no weight average
  int64_t world_size = 1;  // of the job that wrote it (a run may resume on another number of ranks)
  // This rank's rank_<r>.json; on more ranks than wrote the checkpoint, rank 0's for ranks beyond
  // them (rank_state_is_own false: its random-number states belong to another rank).
  Json rank_state;
  bool rank_state_is_own = true;
};

class CheckpointManager {
 public:
  CheckpointManager(const std::string& run_dir, const CheckpointConfig& config, int rank, int world_size);

  // Collective: every rank calls it with the same step, in the same order as other collectives.
  // `ema` empty: no ema.safetensors.
  void save(int64_t step, const model::NamedTensors& weights, const model::NamedTensors& optimizer,
            const model::NamedTensors& ema, const Json& rank_state, const std::string& config_yaml,
            dist::Communicator& comm);

  // Collective: rank 0 picks the newest checkpoint that verifies, every rank loads it.
  // Returns false when there is none.
  bool load_latest(CheckpointData& out, dist::Communicator& comm);

  // Rank 0: checkpoints/latest -> step_N, unless it already points there (after resuming from an
  // older checkpoint than the one it named: that one was refused, or never committed). Warns.
  void repair_latest(int64_t step) const;

  const std::string& root() const { return root_; }

 private:
  void point_latest_at(int64_t step) const;
  std::string root_;
  CheckpointConfig config_;
  int rank_;
  int world_size_;
  std::set<std::string> refused_;  // committed checkpoints that failed verification at resume: never pruned or counted
};

// checkpoint.resume: false in a run.dir that holds an earlier run's outputs. Its checkpoints would
// interleave with this run's by step number and its metrics lines with this run's, so they move
// (checkpoints/, metrics.jsonl, tb/, summary.json, config.yaml, profile traces) into
// run_dir/previous/, replacing what an even earlier run left there. Returns whether anything moved.
bool set_aside_earlier_run(const std::string& run_dir);

// Verifies COMMITTED and every checksum in MANIFEST.json; throws CheckpointError naming the
// directory, the file and what is wrong.
void verify_checkpoint(const std::string& dir);

// Checkpoint directories (step_N) under `root`, committed or not, newest first (by step number).
std::vector<std::string> list_checkpoints(const std::string& root);

// Tar shards: the ranks whose data order the run in `run_dir` follows, from its newest committed
// checkpoint whose rank_0.json reads ("data_world_size"; before that key, the ranks that wrote
// it); 0 when there is none. The same in every checkpoint of a run (shards.h).
int data_world_size_of_run(const std::string& run_dir);

// Whether `dir` carries the COMMITTED marker (written last; verify_checkpoint checks the rest).
bool is_committed(const std::string& dir);

// A checkpoint directory itself, or the newest verified one under a checkpoints/ root or under
// a run.dir's checkpoints/.
std::string resolve_checkpoint_dir(const std::string& path);

// Reads model.safetensors (or, with `ema`, ema.safetensors) of a verified checkpoint directory
// (the fine-tune stage's init_from).
model::NamedTensors read_checkpoint_weights(const std::string& dir, bool ema = false);

}  // namespace vit::train

#include "trainer/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <torch/torch.h>

#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "core/strings.h"
#include "distributed/communicator.h"

namespace vit::train {
namespace fs = std::filesystem;

namespace {
constexpr const char* kCommitted = "COMMITTED";
constexpr const char* kManifest = "MANIFEST.json";

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

int64_t step_of(const fs::path& dir) {
  std::string name = dir.filename().string();
  if (!starts_with(name, "step_") || name.find('.') != std::string::npos) return -1;
  try {
    return std::stoll(name.substr(5));
  } catch (...) {
    return -1;
  }
}

// Rank 0's decision, shared with every rank through the host communicator.
int64_t broadcast_int(dist::Communicator& comm, int64_t value) {
  auto t = torch::tensor({value}, torch::kInt64);
  comm.broadcast(t, {0})->wait();
  return t.item<int64_t>();
}
}  // namespace

CheckpointManager::CheckpointManager(const std::string& run_dir, const CheckpointConfig& config, int rank,
                                     int world_size)
    : root_(run_dir + "/checkpoints"), config_(config), rank_(rank), world_size_(world_size) {}

void CheckpointManager::save(int64_t step, const model::NamedTensors& weights, const model::NamedTensors& optimizer,
                             const model::NamedTensors& ema, const Json& rank_state, const std::string& config_yaml,
                             dist::Communicator& comm) {
  const fs::path final_dir = fs::path(root_) / step_name(step);
  const fs::path partial = fs::path(root_) / (step_name(step) + ".partial");
  if (rank_ == 0) {
    remove_tree(partial.string());
    if (fs::exists(final_dir)) remove_tree(final_dir.string());  // a re-run of the same step replaces it
    fs::create_directories(partial);
  }
  comm.barrier()->wait();
  write_file_atomic((partial / ("rank_" + std::to_string(rank_) + ".json")).string(), rank_state.dump() + "\n");
  if (rank_ == 0) {
    model::write_safetensors((partial / "model.safetensors").string(), weights, {{"format", "pt"}});
    model::write_safetensors((partial / "optimizer.safetensors").string(), optimizer);
    if (!ema.empty()) model::write_safetensors((partial / "ema.safetensors").string(), ema, {{"format", "pt"}});
    write_file_atomic((partial / "config.yaml").string(), config_yaml);
  }
  comm.barrier()->wait();
  if (rank_ == 0) {
    Json manifest = Json::object();
    manifest["step"] = step;
    manifest["world_size"] = world_size_;
    Json files = Json::object();
    std::vector<fs::path> entries;
    for (const auto& e : fs::directory_iterator(partial)) entries.push_back(e.path());
    std::sort(entries.begin(), entries.end());
    for (const auto& p : entries) {
      std::string bytes = read_file(p.string());
      Json f = Json::object();
      f["sha256"] = sha256_hex(bytes);
      f["bytes"] = static_cast<int64_t>(bytes.size());
      files[p.filename().string()] = f;
    }
    manifest["files"] = files;
    write_file_atomic((partial / kManifest).string(), manifest.dump() + "\n");
    fs::rename(partial, final_dir);
    fsync_directory(root_);
    write_file_atomic((final_dir / kCommitted).string(), std::to_string(step) + "\n");
    point_latest_at(step);
    // Keep the newest `keep` committed checkpoints up to this one. A folder never marked
    // COMMITTED (a job stopped between the rename and the marker) cannot be resumed from: it goes.
    // A committed one that failed verification when this run resumed stays for inspection,
    // outside the count (this run replaces it if it reaches its step); so does any of a later step.
    refused_.erase(final_dir.string());
    int64_t kept = 0;
    for (const auto& dir : list_checkpoints(root_)) {
      if (!is_committed(dir)) {
        remove_tree(dir);
      } else if (step_of(dir) <= step && !refused_.count(dir) && ++kept > config_.keep) {
        remove_tree(dir);
      }
    }
  }
  comm.barrier()->wait();
}

void CheckpointManager::point_latest_at(int64_t step) const {
  // checkpoints/latest -> step_N, replaced atomically (what a fine-tune config's init_from names).
  const fs::path link = fs::path(root_) / "latest", tmp_link = fs::path(root_) / "latest.tmp";
  remove_tree(tmp_link.string());
  fs::create_directory_symlink(step_name(step), tmp_link);
  fs::rename(tmp_link, link);
  fsync_directory(root_);
}

void CheckpointManager::repair_latest(int64_t step) const {
  if (rank_ != 0) return;
  const fs::path link = fs::path(root_) / "latest";
  std::error_code ec;
  const fs::path target = fs::read_symlink(link, ec);
  if (!ec && target == fs::path(step_name(step))) return;
  point_latest_at(step);
  log_warn(link.string(), ec ? " was missing" : str(" pointed at ", target.string(), ", which was refused"),
           "; it now points at ", step_name(step), ", the checkpoint this run resumed from");
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::exists(root)) return {};
  for (const auto& e : fs::directory_iterator(root)) {
    int64_t step = step_of(e.path());
    if (e.is_directory() && step >= 0) found.emplace_back(step, e.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

int data_world_size_of_run(const std::string& run_dir) {
  for (const auto& dir : list_checkpoints((fs::path(run_dir) / "checkpoints").string())) {
    if (!is_committed(dir)) continue;
    try {
      const Json state = Json::parse(read_file(dir + "/rank_0.json"));
      if (state.contains("data_world_size")) return static_cast<int>(state.at("data_world_size").get<int64_t>());
      return static_cast<int>(Json::parse(read_file(dir + "/" + kManifest)).at("world_size").get<int64_t>());
    } catch (const std::exception&) {
      continue;  // damaged: resume's verification reports it; an older checkpoint of the run answers
    }
  }
  return 0;
}

bool is_committed(const std::string& dir) { return fs::exists(fs::path(dir) / kCommitted); }

void verify_checkpoint(const std::string& dir) {
  VIT_CHECK(fs::is_directory(dir), CheckpointError, "checkpoint '", dir, "' does not exist");
  VIT_CHECK(is_committed(dir), CheckpointError, "checkpoint '", dir,
            "' is not committed (no COMMITTED marker: the job stopped while writing it)");
  struct Entry {
    std::string name, sha256;
    int64_t bytes;
  };
  std::vector<Entry> entries;
  try {
    Json manifest = Json::parse(read_file((fs::path(dir) / kManifest).string()));
    manifest.at("world_size").get<int64_t>();  // load_latest reads it
    for (const auto& [name, info] : manifest.at("files").items())
      entries.push_back({name, info.at("sha256").get<std::string>(), info.at("bytes").get<int64_t>()});
  } catch (const std::exception& e) {
    VIT_THROW(CheckpointError, "checkpoint '", dir, "': unreadable MANIFEST.json: ", e.what());
  }
  for (const auto& f : entries) {
    fs::path p = fs::path(dir) / f.name;
    VIT_CHECK(fs::exists(p), CheckpointError, "checkpoint '", dir, "': file ", f.name,
              " listed in MANIFEST.json is missing");
    std::string bytes = read_file(p.string());
    VIT_CHECK(static_cast<int64_t>(bytes.size()) == f.bytes, CheckpointError, "checkpoint '", dir, "': ", f.name,
              " has ", bytes.size(), " bytes, the manifest says ", f.bytes, " (truncated)");
    VIT_CHECK(sha256_hex(bytes) == f.sha256, CheckpointError, "checkpoint '", dir, "': ", f.name,
              " does not match its sha256 in MANIFEST.json (corrupt)");
  }
}

std::string resolve_checkpoint_dir(const std::string& path) {
  VIT_CHECK(fs::exists(path), CheckpointError, "checkpoint '", path,
            "' does not exist; run the pretraining stage first or fix model.init_from");
  if (fs::exists(fs::path(path) / kManifest) || fs::exists(fs::path(path) / kCommitted)) return path;
  // A run.dir: its checkpoints/ folder.
  const std::string root = list_checkpoints(path).empty() && fs::is_directory(fs::path(path) / "checkpoints")
                               ? (fs::path(path) / "checkpoints").string()
                               : path;
  // A checkpoints/ root: the newest checkpoint that verifies.
  for (const auto& dir : list_checkpoints(root)) {
    try {
      verify_checkpoint(dir);
      return dir;
    } catch (const CheckpointError& e) {
      log_warn("refused: ", e.what(), "; trying an older checkpoint");
    }
  }
  VIT_THROW(CheckpointError, "'", path, "' holds no committed checkpoint that verifies (name a checkpoint, a "
            "checkpoints/ folder or a run.dir of a finished pretraining run)");
}

model::NamedTensors read_checkpoint_weights(const std::string& dir, bool ema) {
  verify_checkpoint(dir);
  const fs::path file = fs::path(dir) / (ema ? "ema.safetensors" : "model.safetensors");
  VIT_CHECK(fs::exists(file), ConfigError, "model.init_from_ema: checkpoint '", dir,
            "' holds no ema.safetensors (its run had train.ema_decay: 0); set model.init_from_ema: false");
  return model::read_safetensors(file.string()).tensors;
}

bool set_aside_earlier_run(const std::string& run_dir) {
  const fs::path dir(run_dir);
  std::vector<fs::path> outputs;
  if (fs::is_directory(dir)) {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name == "checkpoints" || name == "metrics.jsonl" || name == "tb" || name == "summary.json" ||
          name == "config.yaml" || (starts_with(name, "profile_rank") && ends_with(name, ".json")))
        outputs.push_back(e.path());
    }
  }
  if (outputs.empty()) return false;
  const fs::path previous = dir / "previous";
  remove_tree(previous.string());
  fs::create_directories(previous);
  for (const auto& p : outputs) fs::rename(p, previous / p.filename());
  fsync_directory(run_dir);
  return true;
}

bool CheckpointManager::load_latest(CheckpointData& out, dist::Communicator& comm) {
  int64_t chosen = -1;
  if (rank_ == 0) {
    std::vector<std::string> refused;  // committed, yet failing verification
    for (const auto& dir : list_checkpoints(root_)) {
      try {
        verify_checkpoint(dir);
      } catch (const CheckpointError& e) {
        log_warn("refused: ", e.what(), "; trying an older checkpoint");
        if (is_committed(dir)) {
          refused.push_back(e.what());
          refused_.insert(dir);
        }
        continue;
      }
      chosen = step_of(dir);
      break;
    }
    // Starting over from step 0 would silently throw away the run (say, over a file-system
    // fault): only a run.dir whose checkpoints were never committed starts fresh.
    VIT_CHECK(chosen >= 0 || refused.empty(), CheckpointError, "run.dir '", fs::path(root_).parent_path().string(),
              "' holds ", refused.size(), " committed checkpoint(s) and none verifies (newest: ", refused.empty() ? "" : refused[0],
              "); restore them, or start over: a new run.dir, or checkpoint.resume: false (which sets them aside in "
              "run.dir/previous/)");
  }
  chosen = broadcast_int(comm, chosen);
  if (chosen < 0) return false;
  out.dir = (fs::path(root_) / step_name(chosen)).string();
  out.step = chosen;
  out.weights = model::read_safetensors(out.dir + "/model.safetensors").tensors;
  out.optimizer = model::read_safetensors(out.dir + "/optimizer.safetensors").tensors;
  if (fs::exists(out.dir + "/ema.safetensors")) out.ema = model::read_safetensors(out.dir + "/ema.safetensors").tensors;
  // Written by another number of ranks (elastic resume; the trainer maps the data position).
  out.world_size = Json::parse(read_file(out.dir + "/" + kManifest)).at("world_size").get<int64_t>();
  out.rank_state_is_own = rank_ < out.world_size;
  std::string rank_file = out.dir + "/rank_" + std::to_string(out.rank_state_is_own ? rank_ : 0) + ".json";
  try {
    out.rank_state = Json::parse(read_file(rank_file));
  } catch (const std::exception& e) {
    VIT_THROW(CheckpointError, "checkpoint '", out.dir, "': cannot read ", rank_file, ": ", e.what());
  }
  return true;
}

void validate(const CheckpointConfig& c) {
  VIT_CHECK(c.keep >= 1, ConfigError, "checkpoint.keep: must be >= 1");
  VIT_CHECK(c.every_steps >= 0, ConfigError, "checkpoint.every_steps: must be >= 0 (0 = at the end only)");
}

}  // namespace vit::train

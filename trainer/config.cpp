#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::train {
namespace {

namespace fs = std::filesystem;

// ---- The schema: every key, bound to a member of Config -------------------------------------

// Whether a resumed run may give a key another value than the run it resumes: where files
// are, how it computes (device, precision, kernels), what it logs, how often it evaluates and
// checkpoints, and settings that only act at initialisation or in evaluation may change; the
// run's length, warmup and batch too, compared by the trainer as the numbers they give (total
// steps, warmup steps, micro-batches per step). Everything else the saved state depends on.
enum OnResume { kMustMatch, kMayChange };

struct Field {
  std::string key;                                                   // "model.depth"
  std::function<void(const YAML::Node&)> read;                       // throws YAML::Exception on a bad type
  std::function<void(YAML::Emitter&)> write;
  std::string type_name;
  OnResume on_resume = kMustMatch;
};

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a list of numbers";
}

template <typename T>
Field field(const std::string& key, T* member, OnResume on_resume = kMustMatch) {
  Field f;
  f.key = key;
  f.on_resume = on_resume;
  f.type_name = type_name<T>();
  f.read = [member](const YAML::Node& node) {
    if constexpr (std::is_same_v<T, std::vector<double>>) {
      if (!node.IsSequence()) throw YAML::BadConversion(node.Mark());
    } else if (!node.IsScalar()) {
      throw YAML::BadConversion(node.Mark());
    }
    *member = node.as<T>();
  };
  f.write = [member](YAML::Emitter& out) {
    if constexpr (std::is_same_v<T, std::vector<double>>) {
      out << YAML::Flow << *member;
    } else if constexpr (std::is_floating_point_v<T>) {
      out << YAML::Precision(10) << *member;
    } else {
      out << *member;
    }
  };
  return f;
}

std::vector<Field> schema(Config& c) {
  auto& r = c.run;
  auto& m = c.model;
  auto& d = c.data;
  auto& o = c.optim;
  auto& s = c.schedule;
  auto& t = c.train;
  auto& x = c.distributed;
  auto& k = c.checkpoint;
  auto& l = c.logging;
  return {
      field("run.name", &r.name, kMayChange), field("run.dir", &r.dir, kMayChange), field("run.seed", &r.seed), field("run.device", &r.device, kMayChange),

      field("model.preset", &m.preset), field("model.image_size", &m.image_size),
      field("model.image_height", &m.image_height), field("model.image_width", &m.image_width),
      field("model.patch_size", &m.patch_size), field("model.channels", &m.channels), field("model.width", &m.width),
      field("model.depth", &m.depth), field("model.num_heads", &m.num_heads), field("model.mlp_dim", &m.mlp_dim),
      field("model.num_classes", &m.num_classes), field("model.head", &m.head), field("model.head_init", &m.head_init, kMayChange),
      field("model.fused_norm", &m.fused_norm, kMayChange),
      field("model.fused_bias_grad", &m.fused_bias_grad, kMayChange), field("model.dropout", &m.dropout),
      field("model.attn_dropout", &m.attn_dropout), field("model.drop_path", &m.drop_path),
      field("model.layer_norm_eps", &m.layer_norm_eps), field("model.init_from", &m.init_from, kMayChange),
      field("model.init_from_ema", &m.init_from_ema, kMayChange),
      field("model.pos_embed_interpolation", &m.pos_embed_interpolation, kMayChange),

      field("data.dataset", &d.dataset), field("data.path", &d.path, kMayChange), field("data.eval_path", &d.eval_path, kMayChange),
      field("data.num_classes", &d.num_classes), field("data.synthetic_train_size", &d.synthetic_train_size),
      field("data.synthetic_eval_size", &d.synthetic_eval_size),
      field("data.synthetic_image_size", &d.synthetic_image_size),
      field("data.synthetic_seed", &d.synthetic_seed), field("data.cifar100_labels", &d.cifar100_labels),
      field("data.num_workers", &d.num_workers, kMayChange), field("data.prefetch_batches", &d.prefetch_batches, kMayChange),
      field("data.on_corrupt", &d.on_corrupt, kMayChange), field("data.decode", &d.decode, kMayChange),
      field("data.shuffle_buffer", &d.shuffle_buffer),
      field("data.device_resident", &d.device_resident, kMayChange), field("data.train_crop", &d.train_crop),
      field("data.crop_padding", &d.crop_padding), field("data.rrc_scale", &d.rrc_scale),
      field("data.rrc_ratio", &d.rrc_ratio), field("data.hflip", &d.hflip), field("data.rand_augment", &d.rand_augment),
      field("data.random_erase_prob", &d.random_erase_prob), field("data.repeated_augment", &d.repeated_augment),
      field("data.mixup_alpha", &d.mixup_alpha),
      field("data.cutmix_alpha", &d.cutmix_alpha), field("data.resize_interpolation", &d.resize_interpolation),
      field("data.eval_crop_fraction", &d.eval_crop_fraction, kMayChange), field("data.mean", &d.mean), field("data.std", &d.std),

      field("optim.name", &o.name), field("optim.lr", &o.lr), field("optim.weight_decay", &o.weight_decay),
      field("optim.beta1", &o.beta1), field("optim.beta2", &o.beta2), field("optim.eps", &o.eps),
      field("optim.momentum", &o.momentum), field("optim.nesterov", &o.nesterov),
      field("optim.muon_momentum", &o.muon_momentum), field("optim.muon_nesterov", &o.muon_nesterov),
      field("optim.muon_ns_steps", &o.muon_ns_steps), field("optim.clip_grad_norm", &o.clip_grad_norm),

      field("schedule.name", &s.name), field("schedule.warmup_steps", &s.warmup_steps, kMayChange),
      field("schedule.warmup_fraction", &s.warmup_fraction, kMayChange), field("schedule.min_lr", &s.min_lr),

      field("train.epochs", &t.epochs, kMayChange), field("train.steps", &t.steps, kMayChange),
      field("train.micro_batch_size", &t.micro_batch_size), field("train.global_batch_size", &t.global_batch_size, kMayChange),
      field("train.label_smoothing", &t.label_smoothing), field("train.precision", &t.precision, kMayChange),
      field("train.eval_every_steps", &t.eval_every_steps, kMayChange), field("train.cuda_graph", &t.cuda_graph, kMayChange),
      field("train.attention", &t.attention, kMayChange), field("train.gemm_autotune", &t.gemm_autotune, kMayChange),
      field("train.ema_decay", &t.ema_decay), field("train.eval_flip_tta", &t.eval_flip_tta, kMayChange),

      field("distributed.backend", &x.backend, kMayChange), field("distributed.bucket_mb", &x.bucket_mb, kMayChange),
      field("distributed.compress_bf16", &x.compress_bf16, kMayChange), field("distributed.timeout_s", &x.timeout_s, kMayChange),
      field("distributed.check_every_steps", &x.check_every_steps, kMayChange),
      field("distributed.on_nonfinite", &x.on_nonfinite, kMayChange),

      field("checkpoint.every_steps", &k.every_steps, kMayChange), field("checkpoint.keep", &k.keep, kMayChange),
      field("checkpoint.resume", &k.resume, kMayChange),

      field("logging.every_steps", &l.every_steps, kMayChange), field("logging.tensorboard", &l.tensorboard, kMayChange),
      field("logging.progress", &l.progress, kMayChange), field("logging.profile_step", &l.profile_step, kMayChange),
  };
}

// ---- Loading and merging YAML files --------------------------------------------------------

// Where each key (and section) was set: "configs/a.yaml:12" or "--set".
using Origins = std::map<std::string, std::string>;

std::string where(const std::string& file, const YAML::Node& node) {
  const auto mark = node.Mark();
  return mark.is_null() ? file : str(file, ":", mark.line + 1);
}

void record_origins(const YAML::Node& node, const std::string& prefix, const std::string& file, Origins& origins) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      std::string key = kv.first.as<std::string>();
      std::string path = prefix.empty() ? key : prefix + "." + key;
      record_origins(kv.second, path, file, origins);
      origins[path] = where(file, kv.first);
    }
  }
}

// Merges `over` into `base` in place: maps key by key, anything else replaced.
void merge(YAML::Node base, const YAML::Node& over) {
  for (const auto& kv : over) {
    std::string key = kv.first.as<std::string>();
    if (kv.second.IsMap() && base[key] && base[key].IsMap()) {
      merge(base[key], kv.second);
    } else {
      base[key] = YAML::Clone(kv.second);
    }
  }
}

// YAML leaves a repeated key to the reader (yaml-cpp keeps both); in a config it is a mistake.
void check_no_repeated_keys(const YAML::Node& node, const std::string& prefix, const std::string& path) {
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    std::string key = prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>();
    VIT_CHECK(seen.insert(key).second, ConfigError, where(path, kv.first), ": '", key,
              "' is given twice in this file; keep one");
    check_no_repeated_keys(kv.second, key, path);
  }
}

// `named_by`: where a `base:` named this file ("" for the --config file itself).
YAML::Node load_tree(const std::string& path, Origins& origins, std::set<std::string>& chain,
                     const std::string& named_by = "") {
  VIT_CHECK(named_by.empty() || fs::exists(path), ConfigError, named_by, ": base: '", path,
            "' does not exist; a base path is relative to the file that names it");
  VIT_CHECK(fs::exists(path), ConfigError, "config file '", path, "' does not exist; pass --config with a path to a YAML file (see configs/)");
  VIT_CHECK(!fs::is_directory(path), ConfigError, "config file '", path,
            "' is a directory; pass --config with a YAML file (see configs/)");
  std::string canonical = fs::weakly_canonical(path).string();
  VIT_CHECK(!chain.count(canonical), ConfigError, "'", path, "': `base:` chain loops back to this file");
  chain.insert(canonical);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::ParserException& e) {
    VIT_THROW(ConfigError, path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  } catch (const YAML::BadFile&) {
    VIT_THROW(ConfigError, "cannot read config file '", path, "'");
  }
  // An empty file (or only comments, `---`, `~`) would train with every default: surely a mistake.
  VIT_CHECK(!root.IsNull(), ConfigError, path, ": the file is empty (or holds only comments); a config names at "
            "least one section (run:, model:, data:, ...): see configs/ and docs/config.md");
  VIT_CHECK(root.IsMap(), ConfigError, path, ": the top level must be a mapping of sections (run:, model:, ...)");
  check_no_repeated_keys(root, "", path);
  YAML::Node merged(YAML::NodeType::Map);
  if (root["base"]) {
    VIT_CHECK(root["base"].IsScalar(), ConfigError, where(path, root["base"]), ": base: must be a file path");
    fs::path base_path = fs::path(path).parent_path() / root["base"].as<std::string>();
    merged = load_tree(base_path.string(), origins, chain, where(path, root["base"]));
    root.remove("base");
  }
  record_origins(root, "", path, origins);
  merge(merged, root);
  return merged;
}

void apply_override(YAML::Node& root, const std::string& assignment, Origins& origins) {
  auto eq = assignment.find('=');
  VIT_CHECK(eq != std::string::npos && eq > 0, ConfigError, "--set '", assignment,
            "': expected key=value, e.g. --set train.steps=100");
  std::string key = trim(assignment.substr(0, eq));
  std::string value = assignment.substr(eq + 1);
  auto parts = split(key, '.');
  VIT_CHECK(parts.size() == 2, ConfigError, "--set '", assignment, "': key '", key,
            "' must be section.key, e.g. model.depth");
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    VIT_THROW(ConfigError, "--set ", key, ": cannot parse value '", value, "': ", e.what());
  }
  if (parsed.IsNull() && value.empty()) parsed = YAML::Node(std::string());
  if (!root[parts[0]] || !root[parts[0]].IsMap()) root[parts[0]] = YAML::Node(YAML::NodeType::Map);
  YAML::Node section = root[parts[0]];
  section[parts[1]] = parsed;
  origins[key] = "--set";
  origins.emplace(parts[0], "--set");  // a section only --set names
}

std::string origin_of(const Origins& origins, const std::string& key, const std::string& fallback) {
  auto it = origins.find(key);
  return it == origins.end() ? fallback : it->second;
}

// A preset fills the model's shape unless a key is given beside it.
void apply_preset(const YAML::Node& model_node, model::ModelConfig& m) {
  // A `model:` that is not a mapping is reported with the other sections.
  if (!model_node || !model_node.IsMap() || !model_node["preset"]) return;
  VIT_CHECK(model_node["preset"].IsScalar(), ConfigError, "model.preset: must be a preset name, got a nested value");
  if (model_node["preset"].as<std::string>().empty()) return;
  model::apply_preset(model_node["preset"].as<std::string>(), m,
                      [&](const std::string& key) { return static_cast<bool>(model_node[key]); });
}

}  // namespace

std::vector<std::string> valid_keys() {
  Config scratch;
  std::vector<std::string> keys;
  for (const auto& f : schema(scratch)) keys.push_back(f.key);
  return keys;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Origins origins;
  std::set<std::string> chain;
  YAML::Node root = load_tree(path, origins, chain);
  for (const auto& o : overrides) apply_override(root, o, origins);

  Config config;
  config.source = path;
  auto fields = schema(config);
  std::map<std::string, Field*> by_key;
  std::set<std::string> sections;
  for (auto& f : fields) {
    by_key[f.key] = &f;
    sections.insert(split(f.key, '.')[0]);
  }
  const std::vector<std::string> keys = valid_keys();
  const std::vector<std::string> section_list(sections.begin(), sections.end());

  try {
    apply_preset(root["model"], config.model);
  } catch (const ConfigError& e) {
    VIT_THROW(ConfigError, origin_of(origins, "model.preset", path), ": ", e.what());
  }

  for (const auto& section_kv : root) {
    std::string section = section_kv.first.as<std::string>();
    std::string section_where = origin_of(origins, section, path);  // the file (maybe a base:) that has it
    if (!sections.count(section)) {
      std::string guess = nearest(section, section_list);
      VIT_THROW(ConfigError, section_where, ": unknown section '", section, "'",
                guess.empty() ? "" : " (did you mean '" + guess + "'?)", "; sections are ", join(section_list, ", "));
    }
    if (section_kv.second.IsNull()) continue;
    VIT_CHECK(section_kv.second.IsMap(), ConfigError, section_where, ": '", section, "' must be a mapping of keys");
    for (const auto& kv : section_kv.second) {
      std::string key = section + "." + kv.first.as<std::string>();
      std::string at = origin_of(origins, key, section_where);
      auto it = by_key.find(key);
      if (it == by_key.end()) {
        std::string guess = nearest(key, keys);
        VIT_THROW(ConfigError, at, ": unknown key '", key, "'",
                  guess.empty() ? "" : " (did you mean " + guess + "?)",
                  "; docs/config.md lists every key");
      }
      try {
        it->second->read(kv.second);
      } catch (const YAML::Exception&) {
        std::string shown = kv.second.IsScalar() ? "'" + kv.second.as<std::string>() + "'" : "a nested value";
        VIT_THROW(ConfigError, at, ": ", key, " must be ", it->second->type_name, ", got ", shown);
      }
    }
  }

  try {
    model::validate(config.model);
    data::validate(config.data);
    dist::validate(config.distributed);
    validate_for_world(config, 1);
  } catch (const ConfigError& e) {
    // Name the file that set the offending key when the message starts with a key path.
    std::string msg = e.what();
    std::string key = msg.substr(0, std::min(msg.find(':'), msg.find(" / ")));  // "data.mean / data.std: ..."
    VIT_THROW(ConfigError, origin_of(origins, key, path), ": ", msg);
  }
  return config;
}

void validate(const TrainConfig& t) {
  VIT_CHECK(t.micro_batch_size > 0, ConfigError, "train.micro_batch_size: must be positive, got ", t.micro_batch_size);
  VIT_CHECK(t.epochs > 0 || t.steps > 0, ConfigError, "train.epochs: set train.epochs or train.steps > 0");
  VIT_CHECK(t.steps >= 0, ConfigError, "train.steps: must be >= 0 (0 = use train.epochs)");
  VIT_CHECK(t.global_batch_size >= 0, ConfigError, "train.global_batch_size: must be >= 0 (0 = micro x world)");
  VIT_CHECK(t.label_smoothing >= 0 && t.label_smoothing < 1, ConfigError,
            "train.label_smoothing: must be in [0, 1), got ", t.label_smoothing);
  VIT_CHECK(t.ema_decay >= 0 && t.ema_decay < 1, ConfigError,
            "train.ema_decay: must be in [0, 1) (0 = no weight average; 0.999-0.9999 is usual), got ", t.ema_decay);
  VIT_CHECK(t.precision == "auto" || t.precision == "fp32" || t.precision == "bf16", ConfigError,
            "train.precision: must be auto, fp32 or bf16, got '", t.precision, "'");
  VIT_CHECK(model::is_attention_backend(t.attention), ConfigError,
            "train.attention: must be auto, flash, efficient, cudnn or math, got '", t.attention, "'");
}

void validate(const RunConfig& r) {
  VIT_CHECK(r.device == "auto" || r.device == "cpu" || r.device == "cuda", ConfigError,
            "run.device: must be auto, cpu or cuda, got '", r.device, "'");
  VIT_CHECK(!r.dir.empty(), ConfigError, "run.dir: must name a directory for outputs");
}

void validate_for_world(const Config& c, int world_size) {
  validate(c.train);
  const int64_t per_step = c.train.micro_batch_size * world_size;
  if (c.train.global_batch_size > 0) {
    VIT_CHECK(c.train.global_batch_size % per_step == 0, ConfigError, "train.global_batch_size: ",
              c.train.global_batch_size, " is not divisible by world size ", world_size, " x train.micro_batch_size ",
              c.train.micro_batch_size, " = ", per_step, "; choose a multiple of ", per_step);
  }
  validate(c.optim);
  validate(c.schedule);
  VIT_CHECK(c.schedule.min_lr <= c.optim.lr, ConfigError, "schedule.min_lr: must be in [0, optim.lr]");
  validate(c.checkpoint);
  validate(c.logging);
  validate(c.run);
  if (c.data.dataset == "synthetic") {
    VIT_CHECK(c.data.num_classes == c.model.num_classes, ConfigError, "model.num_classes: ", c.model.num_classes,
              " differs from data.num_classes ", c.data.num_classes, " of the synthetic set; make them equal");
  }
}

int64_t accumulation_steps(const Config& c, int world_size) {
  int64_t per_step = c.train.micro_batch_size * world_size;
  return c.train.global_batch_size > 0 ? c.train.global_batch_size / per_step : 1;
}

dist::ConfigPairs config_pairs(const Config& const_config) {
  Config config = const_config;  // the schema binds mutable members
  dist::ConfigPairs out;
  for (const auto& f : schema(config)) {
    YAML::Emitter value;
    f.write(value);
    out.emplace_back(f.key, value.c_str());
  }
  return out;
}

std::string to_yaml(const Config& const_config) {
  Config config = const_config;  // the schema binds mutable members
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string current;
  for (const auto& f : schema(config)) {
    auto parts = split(f.key, '.');
    if (parts[0] != current) {
      if (!current.empty()) out << YAML::EndMap;
      out << YAML::Key << parts[0] << YAML::Value << YAML::BeginMap;
      current = parts[0];
    }
    out << YAML::Key << parts[1] << YAML::Value;
    f.write(out);
  }
  if (!current.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> changes_that_block_resume(const Config& saved, const Config& now) {
  Config scratch;
  const auto fields = schema(scratch);  // for each key's resume rule
  const auto a = config_pairs(saved), b = config_pairs(now);
  std::vector<std::string> out;
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string& key = fields[i].key;
    if (fields[i].on_resume == kMayChange) continue;
    const bool unused = saved.optim.name == now.optim.name && key_unused_by(now.optim.name, key);
    if (unused) continue;
    if (a[i].second != b[i].second) out.push_back(str(key, ": ", a[i].second, " -> ", b[i].second));
  }
  return out;
}

}  // namespace vit::train

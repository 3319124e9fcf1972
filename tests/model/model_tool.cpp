// vit-model-tool: a test helper that lets tests/python/test_timm_compat.py drive the model
// library through files, so vitrain can be compared with timm and Python's safetensors.
// Not a user tool: no config files, no GPU, fp32 on CPU only.
//
//   init     --shape k=v,... --seed S [--jitter STD] --out W.safetensors
//   forward  --shape k=v,... --weights W.safetensors --input X.safetensors --out Y.safetensors
//   resample --in P.safetensors --old HxW --new HxW [--mode bicubic|bilinear] --out Q.safetensors
//   count    [--preset NAME[,NAME...]] [--shape k=v,...] [--num-classes K] [--head mlp|linear]
//   copy     --in A.safetensors|A.npz --out B.safetensors [--dtype F32|F16|BF16]  (.npz: vit_jax layout)
//
// `init --jitter` adds normal noise to every parameter after the regular initialisation, so
// zero biases, LayerNorm ones and the zero head cannot hide a naming mistake. `forward` loads
// the weights strictly (every name and shape must match both ways), reads the tensor "x"
// [B, C, H, W] and writes "logits" [B, K] and "features" [B, N, D]. `resample` reads and writes
// "pos_embed" with one prefix token. `count` prints count_parameters, one line per preset.
// Errors print a message and exit non-zero.
#include <torch/torch.h>

#include <iostream>
#include <map>
#include <set>
#include <string>

#include "core/errors.h"
#include "core/strings.h"
#include "model/config.h"
#include "model/npz.h"
#include "model/safetensors.h"
#include "model/transfer.h"
#include "model/vit.h"

namespace {
using namespace vit;
using namespace vit::model;

using Args = std::map<std::string, std::string>;

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 2; i < argc; i += 2) {
    std::string key = argv[i];
    VIT_CHECK(starts_with(key, "--") && i + 1 < argc, ConfigError, "expected '--key value', got '", key, "'");
    args[key.substr(2)] = argv[i + 1];
  }
  return args;
}

const std::string& required(const Args& args, const std::string& key) {
  auto it = args.find(key);
  VIT_CHECK(it != args.end(), ConfigError, "missing --", key);
  return it->second;
}

std::string optional(const Args& args, const std::string& key, const std::string& fallback) {
  auto it = args.find(key);
  return it == args.end() ? fallback : it->second;
}

// "width=64,depth=2,head=linear,head_init=zero" -> ModelConfig fields, over `config`.
void apply_shape(ModelConfig& config, const std::string& shape) {
  const std::map<std::string, int64_t*> ints = {
      {"image_size", &config.image_size}, {"image_height", &config.image_height},
      {"image_width", &config.image_width}, {"patch_size", &config.patch_size},
      {"channels", &config.channels},     {"width", &config.width},
      {"depth", &config.depth},           {"num_heads", &config.num_heads},
      {"mlp_dim", &config.mlp_dim},       {"num_classes", &config.num_classes}};
  const std::map<std::string, double*> doubles = {{"layer_norm_eps", &config.layer_norm_eps},
                                                  {"dropout", &config.dropout},
                                                  {"attn_dropout", &config.attn_dropout},
                                                  {"drop_path", &config.drop_path}};
  for (const auto& item : split(shape, ',')) {
    if (trim(item).empty()) continue;
    auto eq = item.find('=');
    VIT_CHECK(eq != std::string::npos, ConfigError, "--shape: expected key=value, got '", item, "'");
    std::string key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    if (ints.count(key)) {
      *ints.at(key) = std::stoll(value);
    } else if (doubles.count(key)) {
      *doubles.at(key) = std::stod(value);
    } else if (key == "head") {
      config.head = value;
    } else if (key == "head_init") {
      config.head_init = value;
    } else if (key == "pos_embed_interpolation") {
      config.pos_embed_interpolation = value;
    } else {
      VIT_THROW(ConfigError, "--shape: unknown key '", key, "'");
    }
  }
  validate(config);
}

ModelConfig config_from(const Args& args) {
  ModelConfig config;
  apply_shape(config, optional(args, "shape", ""));
  return config;
}

std::pair<int64_t, int64_t> parse_grid(const std::string& text) {
  auto parts = split(text, 'x');
  VIT_CHECK(parts.size() == 2, ConfigError, "expected a grid HxW, got '", text, "'");
  return {std::stoll(parts[0]), std::stoll(parts[1])};
}

torch::Tensor find_tensor(const SafetensorsFile& file, const std::string& name, const std::string& path) {
  for (const auto& [key, value] : file.tensors)
    if (key == name) return value;
  VIT_THROW(ModelError, "'", path, "' has no tensor '", name, "'");
}

// Copies every tensor of `path` into `model`; any missing, unexpected or misshapen name is an error.
void load_strict(VisionTransformer& model, const std::string& path) {
  auto file = read_safetensors(path);
  std::map<std::string, torch::Tensor> source(file.tensors.begin(), file.tensors.end());
  std::vector<std::string> problems;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters(*model)) {
    auto it = source.find(name);
    if (it == source.end()) {
      problems.push_back("missing " + name);
      continue;
    }
    used.insert(name);
    if (!it->second.sizes().equals(param.sizes())) {
      problems.push_back(vit::str("shape of ", name, ": file ", it->second.sizes(), " vs model ", param.sizes()));
      continue;
    }
    param.copy_(it->second.to(param.dtype()));
  }
  for (const auto& [name, value] : source)
    if (!used.count(name)) problems.push_back("unexpected " + name);
  VIT_CHECK(problems.empty(), ModelError, "'", path, "' does not match the model: ", join(problems, "; "));
}

int cmd_init(const Args& args) {
  ModelConfig config = config_from(args);
  torch::manual_seed(std::stoll(required(args, "seed")));
  VisionTransformer model(config);
  double jitter = std::stod(optional(args, "jitter", "0"));
  if (jitter > 0) {
    torch::NoGradGuard no_grad;
    for (auto& param : model->parameters()) param.add_(torch::randn_like(param) * jitter);
  }
  write_safetensors(required(args, "out"), named_parameters(*model));
  return 0;
}

int cmd_forward(const Args& args) {
  ModelConfig config = config_from(args);
  VisionTransformer model(config);
  load_strict(model, required(args, "weights"));
  model->eval();
  const std::string& input_path = required(args, "input");
  auto x = find_tensor(read_safetensors(input_path), "x", input_path).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto features = model->forward_features(x);  // [B, N, D]
  auto logits = model->forward(x);             // [B, K]
  write_safetensors(required(args, "out"), {{"logits", logits}, {"features", features}});
  return 0;
}

int cmd_resample(const Args& args) {
  const std::string& in = required(args, "in");
  auto pos_embed = find_tensor(read_safetensors(in), "pos_embed", in);
  auto [old_h, old_w] = parse_grid(required(args, "old"));
  auto [new_h, new_w] = parse_grid(required(args, "new"));
  auto out = resample_pos_embed(pos_embed, old_h, old_w, new_h, new_w, optional(args, "mode", "bicubic"));
  write_safetensors(required(args, "out"), {{"pos_embed", out}});
  return 0;
}

int cmd_count(const Args& args) {
  for (const auto& preset : split(optional(args, "preset", ""), ',')) {
    ModelConfig config;
    if (!preset.empty()) apply_preset(preset, config);
    config.num_classes = std::stoll(optional(args, "num-classes", std::to_string(config.num_classes)));
    config.head = optional(args, "head", config.head);
    apply_shape(config, optional(args, "shape", ""));
    std::cout << count_parameters(config) << "\n";
  }
  return 0;
}

int cmd_copy(const Args& args) {
  const std::string in = required(args, "in");
  SafetensorsFile file;
  if (vit::ends_with(in, ".npz")) {
    file.tensors = vit::model::vit_jax_to_timm(vit::model::read_npz(in), in);  // vit_jax layout -> timm names
  } else {
    file = read_safetensors(in);
  }
  std::string dtype = optional(args, "dtype", "");
  if (!dtype.empty()) {
    const std::map<std::string, torch::ScalarType> types = {
        {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16}};
    VIT_CHECK(types.count(dtype), ConfigError, "--dtype: F32, F16 or BF16, got '", dtype, "'");
    for (auto& [name, t] : file.tensors) t = t.to(types.at(dtype));
  }
  write_safetensors(required(args, "out"), file.tensors, file.metadata);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, int (*)(const Args&)> commands = {
      {"init", cmd_init}, {"forward", cmd_forward}, {"resample", cmd_resample},
      {"count", cmd_count}, {"copy", cmd_copy}};
  if (argc < 2 || !commands.count(argv[1])) {
    std::cerr << "usage: vit-model-tool init|forward|resample|count|copy --key value ... (see model_tool.cpp)\n";
    return 2;
  }
  try {
    return commands.at(argv[1])(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "vit-model-tool " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
}

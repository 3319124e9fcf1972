// vit-augment-tool: a test helper that lets tests/python/test_augment_ops.py drive the
// augmentation of data/augment.h through files, so each RandAugment op can be compared with
// torchvision's functional op and the policy with timm's. Not a user tool.
//
//   ops    --in X.safetensors --out Y.safetensors [--fill r,g,b] [--device cpu|cuda]
//          X: "images" uint8 [B, 3, H, W] and "ops" float64 [B, 9], one op per image:
//          (code, value, angle, translate_x, translate_y, shear_x_deg, shear_y_deg, about_corner, unused)
//          with code an aug::Op; value: the blend ratio, the posterize bits, the solarize
//          threshold or the solarize-add amount; the affine arguments are torchvision's F.affine's.
//          Y: "out" float [B, 3, H, W] (whole numbers 0..255).
//   plans  --spec rand-... --count N --size HxW [--erase P] --out P.safetensors
//          The plans drawn for keys 0..N-1: "op" int32 [N, L], "a", "b" float [N, L],
//          "m" float [N, L, 6], "erase" int32 [N, 4] (top, left, height, width).
// Errors print a message and exit non-zero.
#include <torch/torch.h>

#include <iostream>
#include <map>
#include <string>

#include "core/errors.h"
#include "core/strings.h"
#include "data/augment.h"
#include "model/safetensors.h"

namespace {
using namespace vit;
using namespace vit::data;

using Args = std::map<std::string, std::string>;

std::string arg(const Args& args, const std::string& key, const std::string& fallback = "") {
  auto it = args.find(key);
  VIT_CHECK(it != args.end() || !fallback.empty(), ConfigError, "missing --", key);
  return it == args.end() ? fallback : it->second;
}

torch::Tensor tensor_named(const model::NamedTensors& tensors, const std::string& name) {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  VIT_THROW(ConfigError, "input lacks the tensor '", name, "'");
}

void run_ops(const Args& args) {
  const auto input = model::read_safetensors(arg(args, "in")).tensors;
  auto images = tensor_named(input, "images").to(torch::kFloat32).contiguous();
  auto ops = tensor_named(input, "ops").to(torch::kFloat64).contiguous();
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  const auto fill_parts = split(arg(args, "fill", "128,128,128"), ',');
  const std::array<float, 3> fill{std::stof(fill_parts.at(0)), std::stof(fill_parts.at(1)), std::stof(fill_parts.at(2))};
  auto plans = torch::empty({b * static_cast<int64_t>(sizeof(aug::SamplePlan))}, torch::kUInt8);
  auto* plan = reinterpret_cast<aug::SamplePlan*>(plans.data_ptr<uint8_t>());
  const double* o = ops.data_ptr<double>();
  for (int64_t i = 0; i < b; ++i, o += 9) {
    plan[i] = aug::SamplePlan();
    aug::LayerPlan& layer = plan[i].layers[0];
    const auto code = static_cast<int32_t>(o[0]);
    if (code == aug::kAffine) {
      layer = affine_layer(o[2], o[3], o[4], o[5], o[6], o[7] != 0, h, w);
    } else {
      layer.op = code;
      const bool blend = code == aug::kColor || code == aug::kContrast || code == aug::kBrightness || code == aug::kSharpness;
      layer.a = static_cast<float>(o[1]);
      layer.b = blend ? static_cast<float>(1.0 - o[1]) : (code == aug::kSolarizeAdd ? 128.f : 0.f);
    }
  }
  const torch::Device device(arg(args, "device", "cpu"));
  images = images.to(device);
  run_layers(images, plans.to(device), 1, fill);
  model::write_safetensors(arg(args, "out"), {{"out", images.cpu()}});
}

void dump_plans(const Args& args) {
  DataConfig config;
  config.rand_augment = arg(args, "spec");
  config.random_erase_prob = std::stod(arg(args, "erase", "0"));
  const auto size = split(arg(args, "size", "32x32"), 'x');
  LoaderOptions options;
  options.image_height = std::stoll(size.at(0));
  options.image_width = std::stoll(size.at(1));
  const AugmentPolicy policy(config, options);
  const int64_t n = std::stoll(arg(args, "count"));
  const int64_t layers = aug::kMaxLayers;
  auto op = torch::zeros({n, layers}, torch::kInt32), a = torch::zeros({n, layers}), b = torch::zeros({n, layers});
  auto m = torch::zeros({n, layers, 6}), erase = torch::zeros({n, 4}, torch::kInt32);
  for (int64_t i = 0; i < n; ++i) {
    const aug::SamplePlan p = draw_plan(policy, static_cast<uint64_t>(i));
    for (int64_t l = 0; l < layers; ++l) {
      op[i][l] = p.layers[l].op;
      a[i][l] = p.layers[l].a;
      b[i][l] = p.layers[l].b;
      for (int64_t k = 0; k < 6; ++k) m[i][l][k] = p.layers[l].m[k];
    }
    erase[i][0] = p.erase_top;
    erase[i][1] = p.erase_left;
    erase[i][2] = p.erase_height;
    erase[i][3] = p.erase_width;
  }
  model::write_safetensors(arg(args, "out"), {{"op", op}, {"a", a}, {"b", b}, {"m", m}, {"erase", erase}});
}

}  // namespace

int main(int argc, char** argv) {
  try {
    VIT_CHECK(argc >= 2, ConfigError, "usage: vit-augment-tool ops|plans --key value ...");
    Args args;
    for (int i = 2; i < argc; i += 2) {
      const std::string key = argv[i];
      VIT_CHECK(starts_with(key, "--") && i + 1 < argc, ConfigError, "expected '--key value', got '", key, "'");
      args[key.substr(2)] = argv[i + 1];
    }
    const std::string command = argv[1];
    if (command == "ops") {
      run_ops(args);
    } else if (command == "plans") {
      dump_plans(args);
    } else {
      VIT_THROW(ConfigError, "unknown command '", command, "'; use ops or plans");
    }
  } catch (const std::exception& e) {
    std::cerr << "vit-augment-tool: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

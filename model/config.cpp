#include "model/config.h"

#include <iterator>
#include <map>
#include <utility>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::model {
namespace {
const std::map<std::string, PresetShape>& presets() {
  // image, patch, width, depth, heads, mlp: timm's vision_transformer.py model definitions.
  static const std::map<std::string, PresetShape> table = {
      {"vit_tiny_patch16_224", {224, 16, 192, 12, 3, 768}},
      {"vit_small_patch16_224", {224, 16, 384, 12, 6, 1536}},
      {"vit_base_patch16_224", {224, 16, 768, 12, 12, 3072}},
      {"vit_base_patch32_224", {224, 32, 768, 12, 12, 3072}},
      {"vit_large_patch16_224", {224, 16, 1024, 24, 16, 4096}},
      {"vit_huge_patch14_224", {224, 14, 1280, 32, 16, 5120}},
  };
  return table;
}
}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& kv : presets()) names.push_back(kv.first);
  return names;
}

PresetShape preset_shape(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string guess = nearest(name, preset_names());
    VIT_THROW(ConfigError, "model.preset: unknown preset '", name, "'",
              guess.empty() ? "" : " (did you mean '" + guess + "'?)", "; known presets: ",
              join(preset_names(), ", "));
  }
  return it->second;
}

void apply_preset(const std::string& name, ModelConfig& config,
                  const std::function<bool(const std::string& key)>& given) {
  const PresetShape shape = preset_shape(name);
  const std::pair<const char*, int64_t ModelConfig::*> fields[] = {
      {"image_size", &ModelConfig::image_size}, {"patch_size", &ModelConfig::patch_size},
      {"width", &ModelConfig::width},           {"depth", &ModelConfig::depth},
      {"num_heads", &ModelConfig::num_heads},   {"mlp_dim", &ModelConfig::mlp_dim}};
  const int64_t values[] = {shape.image_size, shape.patch_size, shape.width,
                            shape.depth,      shape.num_heads,  shape.mlp_dim};
  for (size_t i = 0; i < std::size(fields); ++i) {
    if (!given || !given(fields[i].first)) config.*(fields[i].second) = values[i];
  }
}

void validate(const ModelConfig& c) {
  auto positive = [](int64_t v, const char* key) {
    VIT_CHECK(v > 0, ConfigError, "model.", key, ": must be a positive integer, got ", v);
  };
  VIT_CHECK(c.image_height >= 0 && c.image_width >= 0, ConfigError,
            "model.image_height, model.image_width: must be >= 0 (0 = model.image_size), got ", c.image_height, ", ",
            c.image_width);
  positive(c.height(), c.image_height > 0 ? "image_height" : "image_size");
  positive(c.width_px(), c.image_width > 0 ? "image_width" : "image_size");
  positive(c.patch_size, "patch_size");
  positive(c.channels, "channels");
  positive(c.width, "width");
  positive(c.depth, "depth");
  positive(c.num_heads, "num_heads");
  positive(c.mlp_dim, "mlp_dim");
  positive(c.num_classes, "num_classes");
  const bool height_off = c.height() % c.patch_size != 0, width_off = c.width_px() % c.patch_size != 0;
  const char* key = height_off && c.image_height > 0   ? "model.image_height"
                    : !height_off && c.image_width > 0 ? "model.image_width"
                                                       : "model.image_size";
  VIT_CHECK(!height_off && !width_off, ConfigError, key, ": ", c.height(), "x", c.width_px(),
            " is not divisible by model.patch_size ", c.patch_size,
            "; choose an image size that is a multiple of the patch size");
  VIT_CHECK(c.width % c.num_heads == 0, ConfigError, "model.width: ", c.width,
            " is not divisible by model.num_heads ", c.num_heads);
  VIT_CHECK(c.head == "mlp" || c.head == "linear", ConfigError, "model.head: must be 'mlp' or 'linear', got '",
            c.head, "'");
  VIT_CHECK(c.head_init == "auto" || c.head_init == "zero" || c.head_init == "trunc_normal", ConfigError,
            "model.head_init: must be auto, zero or trunc_normal, got '", c.head_init, "'");
  auto rate = [](double v, const char* key) {
    VIT_CHECK(v >= 0.0 && v < 1.0, ConfigError, "model.", key, ": must be in [0, 1), got ", v);
  };
  rate(c.dropout, "dropout");
  rate(c.attn_dropout, "attn_dropout");
  rate(c.drop_path, "drop_path");
  VIT_CHECK(c.layer_norm_eps > 0, ConfigError, "model.layer_norm_eps: must be positive, got ", c.layer_norm_eps);
  VIT_CHECK(c.pos_embed_interpolation == "bicubic" || c.pos_embed_interpolation == "bilinear", ConfigError,
            "model.pos_embed_interpolation: must be 'bicubic' or 'bilinear', got '", c.pos_embed_interpolation, "'");
}

int64_t count_parameters(const ModelConfig& c) {
  const int64_t D = c.width, M = c.mlp_dim, P = c.patch_size;
  int64_t n = D                                   // cls_token
              + c.num_tokens() * D                // pos_embed
              + c.channels * P * P * D + D;       // patch_embed.proj
  int64_t block = 2 * D                           // norm1
                  + D * 3 * D + 3 * D             // attn.qkv
                  + D * D + D                     // attn.proj
                  + 2 * D                         // norm2
                  + D * M + M + M * D + D;        // mlp.fc1, mlp.fc2
  n += c.depth * block + 2 * D;                   // blocks, norm
  if (c.head == "mlp") n += D * D + D;            // pre_logits.fc
  n += D * c.num_classes + c.num_classes;         // head
  return n;
}

double forward_flops_per_image(const ModelConfig& c) {
  // Matrix products only (2 FLOPs per multiply-add); norms, softmax and GELU are negligible.
  const double D = c.width, M = c.mlp_dim, N = c.num_tokens(), P = c.patch_size;
  const double patches = N - 1;
  double flops = 2.0 * patches * (c.channels * P * P) * D;  // patch embedding
  double block = 2.0 * N * D * 3 * D                         // qkv
                 + 2.0 * N * N * D                           // q k^T
                 + 2.0 * N * N * D                           // attention @ v
                 + 2.0 * N * D * D                           // output projection
                 + 2.0 * N * D * M * 2;                      // fc1 + fc2
  flops += c.depth * block;
  if (c.head == "mlp") flops += 2.0 * D * D;
  flops += 2.0 * D * c.num_classes;
  return flops;
}

bool is_attention_backend(const std::string& name) {
  return name == "auto" || name == "flash" || name == "efficient" || name == "cudnn" || name == "math";
}

}  // namespace vit::model

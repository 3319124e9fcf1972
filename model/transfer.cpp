#include "model/transfer.h"

#include <cmath>
#include <map>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::model {
namespace F = torch::nn::functional;

namespace {
std::string shape_str(const torch::Tensor& t) {
  std::vector<std::string> dims;
  for (auto s : t.sizes()) dims.push_back(std::to_string(s));
  return "[" + join(dims, ", ") + "]";
}
bool is_head_key(const std::string& name) { return starts_with(name, "head.") || starts_with(name, "pre_logits."); }
}  // namespace

torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, int64_t old_h, int64_t old_w, int64_t new_h,
                                 int64_t new_w, const std::string& mode, int64_t num_prefix_tokens) {
  const int64_t D = pos_embed.size(2);
  VIT_CHECK(pos_embed.size(1) == num_prefix_tokens + old_h * old_w, ModelError, "pos_embed has ",
            pos_embed.size(1), " tokens, expected ", num_prefix_tokens, " + ", old_h, " x ", old_w);
  if (old_h == new_h && old_w == new_w) return pos_embed;
  auto prefix = pos_embed.narrow(1, 0, num_prefix_tokens);                            // [1, prefix, D]
  auto grid = pos_embed.narrow(1, num_prefix_tokens, old_h * old_w).to(torch::kFloat32);  // [1, h*w, D]
  grid = grid.reshape({1, old_h, old_w, D}).permute({0, 3, 1, 2});                      // [1, D, h, w]
  auto opts = F::InterpolateFuncOptions()
                  .size(std::vector<int64_t>{new_h, new_w})
                  .align_corners(false)
                  .antialias(true);
  if (mode == "bicubic") {
    opts.mode(torch::kBicubic);
  } else if (mode == "bilinear") {
    opts.mode(torch::kBilinear);
  } else {
    VIT_THROW(ConfigError, "model.pos_embed_interpolation: unknown mode '", mode, "' (bicubic or bilinear)");
  }
  grid = F::interpolate(grid, opts);                                          // [1, D, new_h, new_w]
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_h * new_w, D}).to(pos_embed.dtype());
  return torch::cat({prefix, grid}, 1);
}

TransferReport load_pretrained(VisionTransformer& model, const NamedTensors& source, const TransferOptions& options,
                               const std::string& source_name) {
  const ModelConfig& c = model->config();
  std::map<std::string, torch::Tensor> src(source.begin(), source.end());
  TransferReport report;
  std::vector<std::string> problems;
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : named_parameters(*model)) {
    auto it = src.find(name);
    bool head = is_head_key(name);
    if (head && !options.keep_head) {
      report.initialised.push_back(name);
      continue;
    }
    if (it == src.end()) {
      if (head) {
        report.initialised.push_back(name);
      } else {
        problems.push_back(str(name, ": missing in the source"));
      }
      continue;
    }
    torch::Tensor value = it->second;
    if (name == "pos_embed" && value.dim() == 3 && value.size(0) == 1 && value.size(2) == param.size(2)) {
      // The source's grid: told by the caller (a vitrain checkpoint's config), since the token
      // count alone does not tell it (2x4 and 4x2 grids both have 8 tokens). Untold (a .safetensors
      // or .npz file), a source of the model's token count is taken as the model's grid, as timm
      // loads it, and any other as a square grid.
      int64_t old_h = options.source_grid_h, old_w = options.source_grid_w;
      if ((old_h == 0 || old_w == 0) && value.size(1) == param.size(1)) {
        old_h = c.grid_h();
        old_w = c.grid_w();
      } else if (old_h == 0 || old_w == 0) {
        auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(value.size(1) - 1))));
        old_h = old_w = side;
      }
      if (1 + old_h * old_w != value.size(1)) {
        problems.push_back(options.source_grid_h > 0 && options.source_grid_w > 0
                               ? str("pos_embed: the source has ", value.size(1) - 1, " patch tokens, its config a ",
                                     old_h, "x", old_w, " grid")
                               : str("pos_embed: the source has ", value.size(1) - 1,
                                     " patch tokens, not a square grid, and does not say its grid (only a vitrain "
                                     "checkpoint directory does, in its config.yaml)"));
        continue;
      }
      if (old_h == c.grid_h() && old_w == c.grid_w()) {
        report.loaded.push_back(name);
      } else {
        value = resample_pos_embed(value, old_h, old_w, c.grid_h(), c.grid_w(), c.pos_embed_interpolation);
        report.resampled.push_back(str("pos_embed: grid ", old_h, "x", old_w, " -> ", c.grid_h(), "x", c.grid_w(),
                                       " (", c.pos_embed_interpolation, ")"));
      }
    } else if (!value.sizes().equals(param.sizes())) {
      problems.push_back(str(name, ": source shape ", shape_str(value), " vs model ", shape_str(param)));
      continue;
    } else {
      report.loaded.push_back(name);
    }
    param.copy_(value.to(param.dtype()));
  }
  auto model_params = model->named_parameters(true);
  for (const auto& [name, value] : source) {
    if (!model_params.contains(name) || (is_head_key(name) && !options.keep_head)) report.dropped.push_back(name);
  }
  VIT_CHECK(problems.empty(), ModelError, "cannot initialise the model from '", source_name, "': ",
            join(problems, "; "),
            ". The source must have the same patch size, width, depth and heads as model.* in the config.");
  return report;
}

}  // namespace vit::model

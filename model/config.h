// ModelConfig: the shape and regularisation of a Vision Transformer (Dosovitskiy et al. 2021).
// Filled from the YAML section `model`; `preset` names timm's models and fills the shape, with
// keys given beside it taking precedence (the trainer's config loader applies that rule).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace vit::model {

struct ModelConfig {
  std::string preset;          // "" or a timm name such as "vit_base_patch16_224"
  int64_t image_size = 32;     // square images, or set image_height / image_width
  int64_t image_height = 0;    // 0: same as image_size
  int64_t image_width = 0;     // 0: same as image_size
  int64_t patch_size = 4;
  int64_t channels = 3;
  int64_t width = 192;         // D, the token width
  int64_t depth = 6;           // number of encoder blocks
  int64_t num_heads = 3;       // H
  int64_t mlp_dim = 768;       // hidden width of each block's MLP
  int64_t num_classes = 10;    // K
  std::string head = "mlp";    // "mlp" (pretraining: pre_logits Linear D->D + tanh, then head) or "linear"
  // The final Linear's initial weights: "zero" (the paper's fine-tuning head), "trunc_normal"
  // (timm's, std 0.02), or "auto": zero when init_from is set (fine-tuning), trunc_normal otherwise
  // (from scratch a zero head trains measurably worse: bench/accuracy/README.md).
  std::string head_init = "auto";
  double dropout = 0.0;        // after the position embedding, in the MLPs and after attention projection
  double attn_dropout = 0.0;   // on the attention probabilities
  double drop_path = 0.0;      // stochastic depth, linearly increasing over blocks to this rate
  double layer_norm_eps = 1e-6;
  // On a GPU under bf16 autocast: residual add + drop path + LayerNorm + bf16 cast as one kernel
  // each way (fused_norm.h). Same arithmetic as the unfused ops; false: ATen's ops.
  bool fused_norm = true;
  // On a GPU under bf16 autocast: each Linear's weight gradient in fp32 from cuBLASLt, its bias
  // gradient in fp32 summed by the fused LayerNorm backward (attn.proj, mlp.fc2), the GELU
  // backward (mlp.fc1) or cuBLASLt's epilogue (the rest) (fused_linear.h); false: autocast's
  // linear (bf16 gradients and a separate bias-gradient reduction).
  bool fused_bias_grad = true;
  // Fine-tune stage: a committed checkpoint directory, a timm .safetensors or a vit_jax .npz.
  std::string init_from;
  bool init_from_ema = false;  // from a checkpoint directory: its EMA weights (train.ema_decay), not the model's
  std::string pos_embed_interpolation = "bicubic";  // or "bilinear": resampling to a new grid

  int64_t height() const { return image_height > 0 ? image_height : image_size; }
  int64_t width_px() const { return image_width > 0 ? image_width : image_size; }
  int64_t grid_h() const { return height() / patch_size; }
  int64_t grid_w() const { return width_px() / patch_size; }
  int64_t num_tokens() const { return 1 + grid_h() * grid_w(); }
  bool zero_head() const { return head_init == "zero" || (head_init == "auto" && !init_from.empty()); }
};

// The shape of one of timm's named models, or throws ConfigError listing the names.
struct PresetShape {
  int64_t image_size, patch_size, width, depth, num_heads, mlp_dim;
};
PresetShape preset_shape(const std::string& name);
std::vector<std::string> preset_names();
// The one way a preset becomes a shape: fills image_size, patch_size, width, depth, num_heads
// and mlp_dim from preset_shape(name), except the keys `given` names (set beside the preset
// in a config file; none when it is empty).
void apply_preset(const std::string& name, ModelConfig& config,
                  const std::function<bool(const std::string& key)>& given = {});

// Cross-field checks (divisibility, ranges). Messages name `model.<key>`.
void validate(const ModelConfig& config);

// Parameter count and forward FLOPs per image (multiply-add = 2 FLOPs; training ~ 3x forward).
int64_t count_parameters(const ModelConfig& config);
double forward_flops_per_image(const ModelConfig& config);

// The attention kernel on a GPU (process-wide). "auto": vitrain's short-sequence kernel where it
// applies (fused_attention.h: bf16, at most 160 tokens, heads of 16 or 32, no attention dropout),
// elsewhere at::scaled_dot_product_attention's own choice. "flash" | "efficient" |
// "cudnn" | "math": that ATen kernel alone (an input it cannot take is an error, not a silent
// fallback).
bool is_attention_backend(const std::string& name);
void set_attention_backend(const std::string& name);

}  // namespace vit::model

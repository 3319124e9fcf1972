// Moving weights into a model: the fine-tune stage's transfer from a pretraining checkpoint or
// public weights (timm .safetensors), with position embeddings resampled to a new patch grid.
//
// Note [Position-embedding resampling]: a ViT fine-tuned at a higher resolution with the same
// patch size sees a larger patch grid (8x8 -> 12x12 at 32 -> 48 px). The learned embeddings of
// the patch tokens are laid out on the old grid, interpolated in float32 to the new one, and
// flattened back; the [CLS] embedding is kept as is. The interpolation matches timm's
// resample_abs_pos_embed with its defaults (antialias on, which for bicubic means the a = -0.5
// kernel that PIL uses).
#pragma once

#include <string>
#include <vector>

#include "model/safetensors.h"
#include "model/vit.h"

namespace vit::model {

// pos_embed [1, prefix + old_h * old_w, D] -> [1, prefix + new_h * new_w, D], in its dtype.
torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, int64_t old_h, int64_t old_w, int64_t new_h,
                                 int64_t new_w, const std::string& mode = "bicubic", int64_t num_prefix_tokens = 1);

struct TransferOptions {
  bool keep_head = false;       // false: drop pre_logits.* and head.*, keep the model's fresh head
  int64_t source_grid_h = 0;    // 0: infer a square grid from the source pos_embed
  int64_t source_grid_w = 0;
};

struct TransferReport {
  std::vector<std::string> loaded;       // copied unchanged
  std::vector<std::string> resampled;    // pos_embed, with "old grid -> new grid"
  std::vector<std::string> dropped;      // in the source, not used (pretraining head)
  std::vector<std::string> initialised;  // in the model, not in the source (new head)
};

// Copies `source` into `model`. Throws ModelError naming each key whose shape differs (another
// patch size or width) or that the source lacks, and what to change.
TransferReport load_pretrained(VisionTransformer& model, const NamedTensors& source, const TransferOptions& options,
                               const std::string& source_name);

}  // namespace vit::model

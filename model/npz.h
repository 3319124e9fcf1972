// Reading NumPy .npz archives (np.savez and np.savez_compressed: a ZIP of .npy files, ZIP64
// when large; the ZIP side is libzip's) and the Google vit_jax checkpoint layout inside them,
// converted to timm's names. The .npy format (a small header and raw little-endian data) is read
// here: no packaged C++ library reads it.
//
// Not here: big_vision's stacked-block layout.
#pragma once

#include <string>

#include "model/safetensors.h"

namespace vit::model {

// Every array of the archive under its name (without ".npy"), as CPU tensors.
NamedTensors read_npz(const std::string& path);

// A vit_jax checkpoint ("embedding/kernel", "Transformer/encoderblock_0/...", optionally under
// "opt/target/") as timm-named tensors: cls_token, pos_embed, patch_embed.proj.*, blocks.N.*,
// norm.*, head.*, pre_logits.fc.* (the representation layer, when present). The mapping is the
// one timm's vision_transformer._load_weights applies. Throws ModelError naming missing keys.
NamedTensors vit_jax_to_timm(const NamedTensors& npz, const std::string& source);

}  // namespace vit::model

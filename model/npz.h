// Reading NumPy .npz archives (np.savez: a ZIP of .npy files, stored uncompressed, ZIP64 when
// large) and the Google vit_jax checkpoint layout inside them, converted to timm's names.
//
// Not here: np.savez_compressed archives (deflate): refused with a message saying to re-save
// them with np.savez; big_vision's stacked-block layout.
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

// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
// mapping each name to {dtype, shape, data_offsets} (plus optional "__metadata__" strings),
// then the raw little-endian tensor bytes. Files written here load with Python's
// `safetensors.torch.load_file`, and files written by it (timm's weights) load here.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace vit::model {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Serialises tensors (any device; copied to CPU, contiguous) in the given order.
std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;  // CPU tensors in file order
  std::map<std::string, std::string> metadata;
};
// Throws CheckpointError naming the file for a truncated or malformed file.
SafetensorsFile read_safetensors(const std::string& path);
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors);

// The model's parameters under their (timm) names, in registration order.
NamedTensors named_parameters(torch::nn::Module& module);

}  // namespace vit::model

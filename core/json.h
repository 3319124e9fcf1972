// JSON for safetensors headers, metrics.jsonl lines, checkpoint manifests and rank states:
// nlohmann-json (Debian's nlohmann-json3-dev, header only). The ordered variant keeps keys in
// insertion order (stable files, readable diffs); integers stay exact int64/uint64 (safetensors
// offsets), doubles are written with the digits that read back the same value, and a non-finite
// double is written as null (JSON has no NaN). Errors are nlohmann::json::exception, a
// std::exception whose what() names the position or key; callers add their file's name.
#pragma once

#include <nlohmann/json.hpp>

namespace vit {

using Json = nlohmann::ordered_json;

}  // namespace vit

// The resident loader: the whole split as uint8 [N, 3, H, W] in one tensor, kept on the
// device (data.device_resident) or in host memory, batches cut by index_select and augmented
// as whole batches (augment.h). No threads, no per-sample host work per step.
#pragma once

#include <memory>
#include <optional>

#include "data/loader.h"
#include "data/source.h"

namespace vit::data {

class EncodedSource;

std::unique_ptr<Loader> make_resident_loader(TensorSet set, const DataConfig& config, const LoaderOptions& options);

// Decodes every image of `source` once, in `num_threads` threads, when the decoded set is
// small (all images one size and at most kMaxResidentBytes); nullopt otherwise, so the
// caller streams instead. Corrupt files follow data.on_corrupt (skip: dropped from the set).
constexpr int64_t kMaxResidentBytes = int64_t{4} << 30;
std::optional<TensorSet> decode_all(const EncodedSource& source, int num_threads, bool fail_on_corrupt);

}  // namespace vit::data

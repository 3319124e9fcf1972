// The synthetic data set: no download, deterministic by seed, learnable.
//
// Each class k has a template drawn from (seed, k): a sinusoidal grating with its own
// orientation (classes spread evenly over 90 degrees, jittered, so a
// horizontal flip never maps one class onto another), spatial frequency and colour,
// plus a class base colour. Each sample (drawn from (seed, split, index)) shows its class's
// grating at a random phase (a random shift), random contrast and brightness, a weaker grating
// of another random class as a distractor, and per-pixel Gaussian noise. Labels are index mod
// num_classes, so classes are balanced. Train and eval draw different samples from the same
// class templates. A tiny ViT learns it to > 90% in a couple of CPU minutes; a pixel-level
// nearest-template classifier does much worse (random phase), so it is not trivial.
#pragma once

#include <cstdint>

#include "data/source.h"

namespace vit::data {

struct SyntheticOptions {
  int64_t num_samples = 8192;
  int64_t num_classes = 10;
  int64_t image_size = 32;
  uint64_t seed = 0;
  bool train = true;
};

TensorSet make_synthetic(const SyntheticOptions& options);

}  // namespace vit::data

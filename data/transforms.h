// Host-side, per-sample geometry for the streaming path: crop boxes (RandomResizedCrop,
// pad-and-crop, evaluation resize + centre crop) and one separable resampler that cuts a box
// out of an Image, mirrors it if asked, and writes it at the model's size as planar uint8.
//
// What is drawn (which box, whether to flip) is augment.h's; RandAugment, normalisation, erasing
// and mixing run on whole batches on the device (augment.h), after the uint8 batch is copied there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/random.h"

namespace vit::data {

enum class Interpolation { kBilinear, kBicubic };
Interpolation parse_interpolation(const std::string& name);

// A region of the source in pixel units (edges, not centres): rows [top, top + height).
struct CropBox {
  double top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params: 10 tries at an area fraction in `scale` and a
// log-uniform aspect ratio in `ratio`, then a centre crop with the ratio clamped.
CropBox random_resized_crop_box(int64_t height, int64_t width, const std::vector<double>& scale,
                                const std::vector<double>& ratio, Rng& rng);

// Evaluation: resize the shorter side to min(out_h, out_w) / crop_fraction, centre-crop
// out_h x out_w; expressed as the equivalent box in source pixels.
CropBox center_crop_box(int64_t height, int64_t width, int64_t out_h, int64_t out_w, double crop_fraction);

// CIFAR-style augmentation: a height x width window at a uniform offset in [-pad, pad] of the
// zero-padded image. The box may leave the image; resample_into reads zeros there.
CropBox pad_crop_box(int64_t height, int64_t width, int64_t pad, Rng& rng);

// Resamples `box` of `src` to out_h x out_w (antialiased when shrinking, like PIL), mirrored
// left-right when `flip`, into `out` laid out as 3 planes of out_h x out_w. Pixels outside
// the image read as 0. A box of exactly out_h x out_w at integer offsets copies pixels exactly.
void resample_into(const Image& src, const CropBox& box, bool flip, int64_t out_h, int64_t out_w,
                   Interpolation interpolation, uint8_t* out);

// Scales a box given in full-size coordinates to an image decoded at 1/scale_denom.
CropBox scale_box(const CropBox& box, int64_t full_h, int64_t full_w, const Image& decoded);

}  // namespace vit::data

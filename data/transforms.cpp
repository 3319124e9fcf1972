// Crop boxes and the separable resampler (see transforms.h).
#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"
#include "data/resample_ops.h"

namespace vit::data {
namespace {

// For each output coordinate: the first source tap and the weights of the taps
// (resample_ops.h, shared with the GPU decode path's kernel).
struct Taps {
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<double> weights;  // out_len x max_taps
  int64_t max_taps = 0;
};

Taps make_taps(double start, double length, int64_t out_len, int64_t src_len, Interpolation interp) {
  const bool bicubic = interp == Interpolation::kBicubic;
  Taps t;
  t.max_taps = resample::max_taps(length, out_len, bicubic);
  t.first.resize(out_len);
  t.count.resize(out_len);
  t.weights.assign(static_cast<size_t>(out_len * t.max_taps), 0.0);
  for (int64_t i = 0; i < out_len; ++i) {
    const resample::TapRange range = resample::tap_range(start, length, out_len, src_len, i, bicubic);
    double total = 0;
    double* w = &t.weights[i * t.max_taps];
    for (int64_t k = 0; k < range.count; ++k) {
      w[k] = resample::tap_weight(range, range.lo + k, bicubic);
      total += w[k];
    }
    if (total != 0) {
      for (int64_t k = 0; k < range.count; ++k) w[k] /= total;
    }
    t.first[i] = range.lo;
    t.count[i] = range.count;
  }
  return t;
}

}  // namespace

Interpolation parse_interpolation(const std::string& name) {
  if (name == "bilinear") return Interpolation::kBilinear;
  if (name == "bicubic") return Interpolation::kBicubic;
  VIT_THROW(ConfigError, "data.resize_interpolation: unknown value '", name, "'; use bilinear or bicubic");
}

CropBox random_resized_crop_box(int64_t height, int64_t width, const std::vector<double>& scale,
                                const std::vector<double>& ratio, Rng& rng) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int64_t w = std::llround(std::sqrt(target * aspect));
    const int64_t h = std::llround(std::sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const int64_t top = rng.below(height - h + 1);
      const int64_t left = rng.below(width - w + 1);
      return {static_cast<double>(top), static_cast<double>(left), static_cast<double>(h), static_cast<double>(w)};
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = std::llround(static_cast<double>(w) / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = std::llround(static_cast<double>(h) * ratio[1]);
  }
  return {static_cast<double>((height - h) / 2), static_cast<double>((width - w) / 2), static_cast<double>(h),
          static_cast<double>(w)};
}

CropBox center_crop_box(int64_t height, int64_t width, int64_t out_h, int64_t out_w, double crop_fraction) {
  const double resize_to = std::floor(static_cast<double>(std::min(out_h, out_w)) / crop_fraction);
  const double f = resize_to / static_cast<double>(std::min(height, width));  // source -> resized
  const double h = std::min(static_cast<double>(height), static_cast<double>(out_h) / f);
  const double w = std::min(static_cast<double>(width), static_cast<double>(out_w) / f);
  return {(static_cast<double>(height) - h) / 2, (static_cast<double>(width) - w) / 2, h, w};
}

CropBox pad_crop_box(int64_t height, int64_t width, int64_t pad, Rng& rng) {
  const int64_t dy = rng.below(2 * pad + 1) - pad;
  const int64_t dx = rng.below(2 * pad + 1) - pad;
  return {static_cast<double>(dy), static_cast<double>(dx), static_cast<double>(height), static_cast<double>(width)};
}

CropBox scale_box(const CropBox& box, int64_t full_h, int64_t full_w, const Image& decoded) {
  const double sy = static_cast<double>(decoded.height) / static_cast<double>(full_h);
  const double sx = static_cast<double>(decoded.width) / static_cast<double>(full_w);
  return {box.top * sy, box.left * sx, box.height * sy, box.width * sx};
}

void resample_into(const Image& src, const CropBox& box, bool flip, int64_t out_h, int64_t out_w,
                   Interpolation interpolation, uint8_t* out) {
  const Taps ty = make_taps(box.top, box.height, out_h, src.height, interpolation);
  const Taps tx = make_taps(box.left, box.width, out_w, src.width, interpolation);
  // Horizontal pass over the source rows the vertical taps touch: rows x out_w x 3 floats.
  int64_t row_lo = src.height, row_hi = 0;
  for (int64_t i = 0; i < out_h; ++i) {
    row_lo = std::min(row_lo, ty.first[i]);
    row_hi = std::max(row_hi, ty.first[i] + ty.count[i]);
  }
  row_lo = std::max<int64_t>(row_lo, 0);
  row_hi = std::min<int64_t>(row_hi, src.height);
  const int64_t rows = std::max<int64_t>(row_hi - row_lo, 0);
  std::vector<float> mid(static_cast<size_t>(rows * out_w * 3), 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src.row(row_lo + r);
    float* m = &mid[r * out_w * 3];
    for (int64_t x = 0; x < out_w; ++x) {
      const double* w = &tx.weights[x * tx.max_taps];
      double acc[3] = {0, 0, 0};
      for (int64_t k = 0; k < tx.count[x]; ++k) {
        const int64_t j = tx.first[x] + k;
        if (j < 0 || j >= src.width) continue;
        for (int c = 0; c < 3; ++c) acc[c] += w[k] * s[j * 3 + c];
      }
      for (int c = 0; c < 3; ++c) m[x * 3 + c] = static_cast<float>(acc[c]);
    }
  }
  const int64_t plane = out_h * out_w;
  for (int64_t y = 0; y < out_h; ++y) {
    const double* w = &ty.weights[y * ty.max_taps];
    for (int64_t x = 0; x < out_w; ++x) {
      double acc[3] = {0, 0, 0};
      for (int64_t k = 0; k < ty.count[y]; ++k) {
        const int64_t j = ty.first[y] + k;
        if (j < row_lo || j >= row_hi) continue;
        const float* m = &mid[((j - row_lo) * out_w + x) * 3];
        for (int c = 0; c < 3; ++c) acc[c] += w[k] * m[c];
      }
      const int64_t ox = flip ? out_w - 1 - x : x;
      for (int c = 0; c < 3; ++c) {
        const double v = std::nearbyint(std::clamp(acc[c], 0.0, 255.0));
        out[c * plane + y * out_w + ox] = static_cast<uint8_t>(v);
      }
    }
  }
}

}  // namespace vit::data

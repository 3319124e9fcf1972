// The taps and weights of the antialiased resampler (transforms.h's resample_into), written once
// for the host and the device: transforms.cpp builds its tap tables with them, the GPU decode
// path's crop-resize kernel (augment_kernels.cu) computes them per output pixel. Products and
// sums go through mul_rn / add_rn (augment_ops.h): no FMAs on the device, the same bits both ways.
// No LibTorch here (nvcc compiles this without it).
#pragma once

#include <cmath>
#include <cstdint>

#include "data/augment_ops.h"  // VIT_HD, mul_rn, add_rn

namespace vit::data::resample {

using aug::add_rn;
using aug::mul_rn;

VIT_HD double bilinear_kernel(double x) {
  x = fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

VIT_HD double bicubic_kernel(double x) {  // Keys, a = -0.5 (PIL and torchvision's antialiased bicubic)
  constexpr double a = -0.5;
  x = fabs(x);
  if (x < 1.0) return add_rn(mul_rn(mul_rn(add_rn(mul_rn(a + 2.0, x), -(a + 3.0)), x), x), 1.0);
  if (x < 2.0) return mul_rn(add_rn(mul_rn(add_rn(mul_rn(add_rn(x, -5.0), x), 8.0), x), -4.0), a);
  return 0.0;
}

// Output coordinate i of out_len over the source span [start, start + length) of src_len
// pixels: taps j in [lo, lo + count) with raw weight kernel((j + 0.5 - center) / stretch),
// to be divided by their sum. Taps outside [0, src_len) read 0 (padding), except that for a
// span inside the source the edge taps are clamped (edge pixels replicate, as PIL does).
struct TapRange {
  int64_t lo = 0, count = 0;
  double center = 0, stretch = 1;
};

VIT_HD int64_t max_taps(double length, int64_t out_len, bool bicubic) {
  const double scale = length / static_cast<double>(out_len);
  const double support = (bicubic ? 2.0 : 1.0) * (scale > 1.0 ? scale : 1.0);
  return static_cast<int64_t>(ceil(2.0 * support)) + 3;
}

VIT_HD TapRange tap_range(double start, double length, int64_t out_len, int64_t src_len, int64_t i, bool bicubic) {
  const double scale = length / static_cast<double>(out_len);
  TapRange t;
  t.stretch = scale > 1.0 ? scale : 1.0;
  const double support = mul_rn(bicubic ? 2.0 : 1.0, t.stretch);
  const bool inside = start >= 0 && add_rn(start, length) <= add_rn(static_cast<double>(src_len), 1e-9);
  t.center = add_rn(start, mul_rn(add_rn(static_cast<double>(i), 0.5), scale));
  int64_t lo = static_cast<int64_t>(floor(add_rn(add_rn(t.center, -support), -0.5)));
  int64_t hi = static_cast<int64_t>(ceil(add_rn(add_rn(t.center, support), -0.5))) + 1;  // exclusive
  if (inside) {
    lo = lo > 0 ? lo : 0;
    hi = hi < src_len ? hi : src_len;
  }
  const int64_t cap = lo + max_taps(length, out_len, bicubic);
  hi = hi < cap ? hi : cap;
  t.lo = lo;
  t.count = hi > lo ? hi - lo : 0;
  return t;
}

VIT_HD double tap_weight(const TapRange& t, int64_t j, bool bicubic) {
  const double x = add_rn(add_rn(static_cast<double>(j), 0.5), -t.center) / t.stretch;
  return bicubic ? bicubic_kernel(x) : bilinear_kernel(x);
}

// The sum of a range's raw weights (what each is divided by).
VIT_HD double tap_total(const TapRange& t, bool bicubic) {
  double total = 0;
  for (int64_t k = 0; k < t.count; ++k) total = add_rn(total, tap_weight(t, t.lo + k, bicubic));
  return total;
}

// Tap j's weight divided by the range's total (when that is not 0), as the host tables hold it.
VIT_HD double tap_share(const TapRange& t, int64_t j, double total, bool bicubic) {
  const double w = tap_weight(t, j, bicubic);
  return total != 0 ? w / total : w;
}

}  // namespace vit::data::resample

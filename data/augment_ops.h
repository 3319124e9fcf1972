// The per-pixel arithmetic of RandAugment's operations and of random erasing, written once for
// the host and the device: augment_cpu.cpp loops over pixels with it, augment_kernels.cu runs
// one thread per pixel with it. No LibTorch here (nvcc compiles this without it).
//
// Semantics are torchvision's functional ops on uint8 images (transforms.functional: rotate,
// affine, adjust_brightness / contrast / saturation / sharpness, posterize, solarize,
// autocontrast, equalize, invert) plus timm's SolarizeAdd: images travel as float planes that
// hold whole numbers 0..255, and every operation ends as torchvision's uint8 result does
// (clamp + truncate after a blend, round after a resampling). Products and sums go through
// mul_rn / add_rn so the device does not contract them into FMAs: the host and the device give
// the same bits, and both the bits of torchvision's float32 arithmetic.
//
// Layout: images [B, 3, H, W] float; one SamplePlan per image (augment.h draws them).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VIT_HD __host__ __device__ __forceinline__
#else
#define VIT_HD inline
#endif

namespace vit::data::aug {

constexpr int kMaxLayers = 4;  // RandAugment ops per image, at most

enum Op : int32_t {
  kNone = 0,
  kAffine = 1,        // rotate, shear, translate: bilinear resampling through m, fill outside
  kAutoContrast = 2,  // per channel: (x - min) * 255 / (max - min)
  kEqualize = 3,      // per channel histogram equalisation (lut)
  kInvert = 4,        // 255 - x
  kPosterize = 5,     // keep the a high bits
  kSolarize = 6,      // x >= a: 255 - x
  kSolarizeAdd = 7,   // x < b: min(255, x + a)
  kColor = 8,         // blend with the pixel's grey value: a * x + b * grey
  kContrast = 9,      // blend with the image's mean grey value
  kBrightness = 10,   // blend with black: a * x
  kSharpness = 11,    // blend with the 3x3 smoothed image (borders kept)
};

// kAffine: output pixel (column i, row j) reads the input at the index coordinates
// (m[0] i + m[1] j + m[2], m[3] i + m[4] j + m[5]). Blends: a * x + b * other, a and b the
// float32 values of torchvision's ratio and 1 - ratio.
struct LayerPlan {
  int32_t op = kNone;
  float a = 0.f, b = 0.f;
  float m[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
};

struct SamplePlan {
  LayerPlan layers[kMaxLayers];
  int32_t erase_top = 0, erase_left = 0, erase_height = 0, erase_width = 0;  // height 0: no erasing
  uint32_t noise_key_lo = 0, noise_key_hi = 0;                                 // per-pixel noise of the erased box
};

// What the operations that look at the whole image need, per image.
struct ImageStats {
  float lo[3], hi[3];       // kAutoContrast: per channel min and max
  float gray_mean;          // kContrast: mean of the uint8 grey image
  uint8_t lut[3][256];      // kEqualize
};

VIT_HD bool needs_stats(int32_t op) { return op == kAutoContrast || op == kEqualize || op == kContrast; }

// a * b and a + b, each rounded once (float or double): the device never contracts them into
// an FMA, so it gives the host's bits.
template <typename T>
VIT_HD T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(double)) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <typename T>
VIT_HD T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == sizeof(double)) {
    return __dadd_rn(a, b);
  } else {
    return __fadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

// torchvision's `.clamp(0, 255).to(torch.uint8)`: clamp, then truncate.
VIT_HD float clamp_trunc(float v) { return truncf(fminf(fmaxf(v, 0.f), 255.f)); }
// torchvision's resampling output for uint8: round (half to even), then uint8.
VIT_HD float round_u8(float v) { return fminf(fmaxf(rintf(v), 0.f), 255.f); }

// rgb_to_grayscale on uint8: (0.2989 r + 0.587 g + 0.114 b).to(uint8).
VIT_HD float gray_u8(float r, float g, float b) {
  return clamp_trunc(add_rn(add_rn(mul_rn(0.2989f, r), mul_rn(0.587f, g)), mul_rn(0.114f, b)));
}

VIT_HD float blend(float a, float x, float b, float other) { return clamp_trunc(add_rn(mul_rn(a, x), mul_rn(b, other))); }

// Equalisation lut of one channel from its histogram (torchvision's _scale_channel).
VIT_HD void equalize_lut(const int32_t* hist, uint8_t* lut) {
  int32_t total = 0, last = 0;
  for (int v = 0; v < 256; ++v) {
    total += hist[v];
    if (hist[v] != 0) last = v;
  }
  const int32_t step = (total - hist[last]) / 255;
  if (step == 0) {
    for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v);
    return;
  }
  int32_t cumulative = 0;
  lut[0] = 0;
  for (int v = 1; v < 256; ++v) {
    cumulative += hist[v - 1];
    const int32_t value = (cumulative + step / 2) / step;
    lut[v] = static_cast<uint8_t>(value > 255 ? 255 : value);
  }
}

// One output pixel of a colour operation that reads only its own pixel (and the stats).
VIT_HD void colour_pixel(const LayerPlan& p, const ImageStats& s, const float in[3], float out[3]) {
  switch (p.op) {
    case kAutoContrast:
      for (int c = 0; c < 3; ++c) {
        // torchvision's scale = 255 / (max - min) is Tensor.__rtruediv__: reciprocal, then times 255.
        out[c] = s.hi[c] == s.lo[c] ? in[c]
                                    : clamp_trunc(mul_rn(in[c] - s.lo[c], mul_rn(1.f / (s.hi[c] - s.lo[c]), 255.f)));
      }
      return;
    case kEqualize:
      for (int c = 0; c < 3; ++c) out[c] = static_cast<float>(s.lut[c][static_cast<int>(in[c])]);
      return;
    case kInvert:
      for (int c = 0; c < 3; ++c) out[c] = 255.f - in[c];
      return;
    case kPosterize: {
      const int keep = 0xFF & ~((1 << (8 - static_cast<int>(p.a))) - 1);
      for (int c = 0; c < 3; ++c) out[c] = static_cast<float>(static_cast<int>(in[c]) & keep);
      return;
    }
    case kSolarize:
      for (int c = 0; c < 3; ++c) out[c] = in[c] >= p.a ? 255.f - in[c] : in[c];
      return;
    case kSolarizeAdd:
      for (int c = 0; c < 3; ++c) out[c] = in[c] < p.b ? fminf(255.f, in[c] + p.a) : in[c];
      return;
    case kColor: {
      const float g = gray_u8(in[0], in[1], in[2]);
      for (int c = 0; c < 3; ++c) out[c] = blend(p.a, in[c], p.b, g);
      return;
    }
    case kContrast:
      for (int c = 0; c < 3; ++c) out[c] = blend(p.a, in[c], p.b, s.gray_mean);
      return;
    case kBrightness:
      for (int c = 0; c < 3; ++c) out[c] = blend(p.a, in[c], p.b, 0.f);
      return;
    default:
      for (int c = 0; c < 3; ++c) out[c] = in[c];
      return;
  }
}

// One output pixel (i, j) of layer `p` over the planes `in` ([3][h][w]). `fill`: the colour
// that kAffine shows outside the image.
VIT_HD void layer_pixel(const LayerPlan& p, const ImageStats& s, const float* in, int h, int w, const float fill[3],
                        int i, int j, float out[3]) {
  const int plane = h * w;
  if (p.op == kAffine) {
    // grid_sample(bilinear, zeros, align_corners=False) of the image and of a plane of ones (the
    // mask), then img * mask + (1 - mask) * fill: torchvision's _apply_grid_transform.
    const float fi = static_cast<float>(i), fj = static_cast<float>(j);
    const float x = add_rn(add_rn(mul_rn(p.m[0], fi), mul_rn(p.m[1], fj)), p.m[2]);
    const float y = add_rn(add_rn(mul_rn(p.m[3], fi), mul_rn(p.m[4], fj)), p.m[5]);
    const float x0f = floorf(x), y0f = floorf(y);
    const int x0 = static_cast<int>(x0f), y0 = static_cast<int>(y0f);
    const float wx[2] = {x0f + 1.f - x, x - x0f}, wy[2] = {y0f + 1.f - y, y - y0f};
    float acc[3] = {0.f, 0.f, 0.f}, mask = 0.f;
    for (int dy = 0; dy < 2; ++dy) {
      for (int dx = 0; dx < 2; ++dx) {
        const int xx = x0 + dx, yy = y0 + dy;
        if (xx < 0 || xx >= w || yy < 0 || yy >= h) continue;
        const float wgt = mul_rn(wx[dx], wy[dy]);
        mask = add_rn(mask, wgt);
        for (int c = 0; c < 3; ++c) acc[c] = add_rn(acc[c], mul_rn(in[c * plane + yy * w + xx], wgt));
      }
    }
    for (int c = 0; c < 3; ++c) out[c] = round_u8(add_rn(mul_rn(acc[c], mask), mul_rn(1.f - mask, fill[c])));
    return;
  }
  const int at = j * w + i;
  const float px[3] = {in[at], in[plane + at], in[2 * plane + at]};
  if (p.op == kSharpness) {
    // Blend with the image smoothed by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 (rounded); the
    // border rows and columns blend with themselves.
    for (int c = 0; c < 3; ++c) {
      float degenerate = px[c];
      if (i > 0 && j > 0 && i < w - 1 && j < h - 1) {
        const float* q = in + c * plane;
        float sum = 0.f;
        for (int dy = -1; dy <= 1; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) {
            const float k = dx == 0 && dy == 0 ? 5.f / 13.f : 1.f / 13.f;
            sum = add_rn(sum, mul_rn(q[(j + dy) * w + i + dx], k));
          }
        }
        degenerate = round_u8(sum);
      }
      out[c] = blend(p.a, px[c], p.b, degenerate);
    }
    return;
  }
  colour_pixel(p, s, px, out);
}

// A standard normal value for erased pixel `index` of the image whose noise key is
// (key_lo, key_hi): a counter-based hash (splitmix64), then Box-Muller.
VIT_HD uint64_t noise_hash(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

VIT_HD float erase_noise(uint32_t key_lo, uint32_t key_hi, uint32_t index) {
  const uint64_t key = (static_cast<uint64_t>(key_hi) << 32) | key_lo;
  const uint64_t bits = noise_hash(key ^ noise_hash(index));
  // Two uniforms of 24 bits, the first in (0, 1].
  const float u1 = (static_cast<float>(bits >> 40) + 1.f) * (1.f / 16777216.f);
  const float u2 = static_cast<float>((bits >> 16) & 0xFFFFFF) * (1.f / 16777216.f);
  return sqrtf(-2.f * logf(u1)) * cosf(6.2831853f * u2);
}

}  // namespace vit::data::aug

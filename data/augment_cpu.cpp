// RandAugment layers and random erasing on CPU tensors: the arithmetic of augment_ops.h in a
// loop over pixels, images spread over ATen's intra-op threads. augment_kernels.cu runs the same
// arithmetic on the GPU, so both give the same pixels.
#include <ATen/Parallel.h>

#include <algorithm>

#include <vector>

#include "core/errors.h"
#include "data/augment.h"

namespace vit::data {
namespace {

// What an op that looks at the whole image needs (augment_ops.h, ImageStats), of one image.
void image_stats(const float* image, int64_t h, int64_t w, int32_t op, aug::ImageStats& s) {
  const int64_t plane = h * w;
  if (op == aug::kContrast) {
    int64_t sum = 0;
    for (int64_t p = 0; p < plane; ++p) sum += static_cast<int64_t>(aug::gray_u8(image[p], image[plane + p], image[2 * plane + p]));
    s.gray_mean = static_cast<float>(sum) / static_cast<float>(plane);
    return;
  }
  for (int c = 0; c < 3; ++c) {
    const float* q = image + c * plane;
    if (op == aug::kAutoContrast) {
      float lo = 255.f, hi = 0.f;
      for (int64_t p = 0; p < plane; ++p) {
        lo = std::min(lo, q[p]);
        hi = std::max(hi, q[p]);
      }
      s.lo[c] = lo;
      s.hi[c] = hi;
    } else {  // kEqualize
      int32_t hist[256] = {};
      for (int64_t p = 0; p < plane; ++p) ++hist[static_cast<int>(q[p])];
      aug::equalize_lut(hist, s.lut[c]);
    }
  }
}

}  // namespace

const aug::SamplePlan* checked_plans(const torch::Tensor& images, const torch::Tensor& plans) {
  VIT_CHECK(images.dim() == 4 && images.size(1) == 3 && images.scalar_type() == torch::kFloat32 &&
                images.is_contiguous(),
            DataError, "augmentation: expected contiguous float images [B, 3, H, W], got ", images.sizes());
  VIT_CHECK(plans.device() == images.device() && plans.scalar_type() == torch::kUInt8 && plans.is_contiguous() &&
                plans.numel() == images.size(0) * static_cast<int64_t>(sizeof(aug::SamplePlan)),
            DataError, "augmentation plans: expected ", images.size(0), " SamplePlans as bytes on ",
            images.device().str());
  return reinterpret_cast<const aug::SamplePlan*>(plans.data_ptr<uint8_t>());
}

void run_layers_cpu(torch::Tensor& images, const torch::Tensor& plans, int num_layers,
                    const std::array<float, 3>& fill) {
  const aug::SamplePlan* plan = checked_plans(images, plans);
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3), plane = h * w;
  float* data = images.data_ptr<float>();
  at::parallel_for(0, b, 1, [&](int64_t first, int64_t last) {
    std::vector<float> out(static_cast<size_t>(3 * plane));
    aug::ImageStats stats;
    for (int64_t n = first; n < last; ++n) {
      float* image = data + n * 3 * plane;
      for (int l = 0; l < num_layers; ++l) {
        const aug::LayerPlan& layer = plan[n].layers[l];
        if (layer.op == aug::kNone) continue;
        if (aug::needs_stats(layer.op)) image_stats(image, h, w, layer.op, stats);
        for (int64_t j = 0; j < h; ++j) {
          for (int64_t i = 0; i < w; ++i) {
            float px[3];
            aug::layer_pixel(layer, stats, image, static_cast<int>(h), static_cast<int>(w), fill.data(),
                             static_cast<int>(i), static_cast<int>(j), px);
            for (int c = 0; c < 3; ++c) out[c * plane + j * w + i] = px[c];
          }
        }
        std::copy(out.begin(), out.end(), image);
      }
    }
  });
}

void run_erase_cpu(torch::Tensor& images, const torch::Tensor& plans) {
  const aug::SamplePlan* plan = checked_plans(images, plans);
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  float* data = images.data_ptr<float>();
  at::parallel_for(0, b, 1, [&](int64_t first, int64_t last) {
    for (int64_t n = first; n < last; ++n) {
      const aug::SamplePlan& p = plan[n];
      for (int64_t c = 0; c < 3; ++c) {
        for (int64_t y = p.erase_top; y < p.erase_top + p.erase_height; ++y) {
          for (int64_t x = p.erase_left; x < p.erase_left + p.erase_width; ++x) {
            const int64_t index = (c * h + y) * w + x;
            data[n * 3 * h * w + index] = aug::erase_noise(p.noise_key_lo, p.noise_key_hi, static_cast<uint32_t>(index));
          }
        }
      }
    }
  });
}

}  // namespace vit::data

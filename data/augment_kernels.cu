// The GPU side of RandAugment and random erasing (augment_kernels.h): one thread per pixel,
// with the per-image statistics (min / max, histogram, mean grey) in a block per image and
// channel first. The arithmetic is augment_ops.h's.
#include "data/augment_kernels.h"

namespace vit::data::kernels {
namespace {

constexpr int kThreads = 256;

// Block (n, c): what image n's op at `layer` needs of channel c (contrast: of the grey image,
// block c == 0 only). Blocks whose op needs nothing leave at once.
__global__ void stats_kernel(const float* images, int height, int width, const aug::SamplePlan* plans, int layer,
                             aug::ImageStats* stats) {
  const int n = blockIdx.x, c = blockIdx.y;
  const int32_t op = plans[n].layers[layer].op;
  if (!aug::needs_stats(op) || (op == aug::kContrast && c != 0)) return;
  const int plane = height * width;
  const float* image = images + static_cast<int64_t>(n) * 3 * plane;
  __shared__ int hist[256];
  __shared__ int lo, hi;
  __shared__ unsigned long long gray_sum;
  for (int v = threadIdx.x; v < 256; v += blockDim.x) hist[v] = 0;
  if (threadIdx.x == 0) {
    lo = 255;
    hi = 0;
    gray_sum = 0;
  }
  __syncthreads();
  for (int p = threadIdx.x; p < plane; p += blockDim.x) {
    if (op == aug::kContrast) {
      const float g = aug::gray_u8(image[p], image[plane + p], image[2 * plane + p]);
      atomicAdd(&gray_sum, static_cast<unsigned long long>(g));
    } else {
      const int v = static_cast<int>(image[c * plane + p]);
      if (op == aug::kAutoContrast) {
        atomicMin(&lo, v);
        atomicMax(&hi, v);
      } else {
        atomicAdd(&hist[v], 1);
      }
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  aug::ImageStats& s = stats[n];
  if (op == aug::kContrast) {
    s.gray_mean = static_cast<float>(gray_sum) / static_cast<float>(plane);
  } else if (op == aug::kAutoContrast) {
    s.lo[c] = static_cast<float>(lo);
    s.hi[c] = static_cast<float>(hi);
  } else {
    aug::equalize_lut(hist, s.lut[c]);
  }
}

__global__ void layer_kernel(const float* in, float* out, int height, int width, const aug::SamplePlan* plans,
                             int layer, const aug::ImageStats* stats, float fill_r, float fill_g, float fill_b) {
  const int n = blockIdx.y;
  const int plane = height * width;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= plane) return;
  const aug::LayerPlan lp = plans[n].layers[layer];
  const float* image = in + static_cast<int64_t>(n) * 3 * plane;
  float* dst = out + static_cast<int64_t>(n) * 3 * plane;
  float px[3];
  if (lp.op == aug::kNone) {
    for (int c = 0; c < 3; ++c) px[c] = image[c * plane + p];
  } else {
    const float fill[3] = {fill_r, fill_g, fill_b};
    aug::layer_pixel(lp, stats[n], image, height, width, fill, p % width, p / width, px);
  }
  for (int c = 0; c < 3; ++c) dst[c * plane + p] = px[c];
}

__global__ void erase_kernel(float* images, int height, int width, const aug::SamplePlan* plans) {
  const int n = blockIdx.y;
  const int plane = height * width;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= plane) return;
  const aug::SamplePlan& s = plans[n];
  const int x = p % width, y = p / width;
  if (y < s.erase_top || y >= s.erase_top + s.erase_height || x < s.erase_left || x >= s.erase_left + s.erase_width)
    return;
  for (int c = 0; c < 3; ++c) {
    const uint32_t index = static_cast<uint32_t>(c * plane + p);
    images[static_cast<int64_t>(n) * 3 * plane + index] = aug::erase_noise(s.noise_key_lo, s.noise_key_hi, index);
  }
}

}  // namespace

cudaError_t launch_augment_layer(const float* in, float* out, int64_t batch, int64_t height, int64_t width,
                                 const aug::SamplePlan* plans, int layer, aug::ImageStats* stats, float fill_r,
                                 float fill_g, float fill_b, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  const int h = static_cast<int>(height), w = static_cast<int>(width);
  stats_kernel<<<dim3(static_cast<unsigned>(batch), 3), kThreads, 0, stream>>>(in, h, w, plans, layer, stats);
  const unsigned blocks = static_cast<unsigned>((height * width + kThreads - 1) / kThreads);
  layer_kernel<<<dim3(blocks, static_cast<unsigned>(batch)), kThreads, 0, stream>>>(in, out, h, w, plans, layer, stats,
                                                                                    fill_r, fill_g, fill_b);
  return cudaGetLastError();
}

cudaError_t launch_erase(float* images, int64_t batch, int64_t height, int64_t width, const aug::SamplePlan* plans,
                         cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((height * width + kThreads - 1) / kThreads);
  erase_kernel<<<dim3(blocks, static_cast<unsigned>(batch)), kThreads, 0, stream>>>(
      images, static_cast<int>(height), static_cast<int>(width), plans);
  return cudaGetLastError();
}

}  // namespace vit::data::kernels

// The GPU side of RandAugment and random erasing (augment_kernels.h): one thread per pixel,
// with the per-image statistics (min / max, histogram, mean grey) in a block per image and
// channel first. The arithmetic is augment_ops.h's.
#include "data/augment_kernels.h"

#include "data/resample_ops.h"

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

// Thread = one output pixel (all three channels) of job blockIdx.y: the two passes of
// transforms.cpp's resample_into in its order (each source row's horizontal sum rounded to
// float, then the vertical sum), the taps and weights of resample_ops.h.
__global__ void crop_resize_kernel(const ResizeJob* jobs, uint8_t* out, int out_h, int out_w, bool bicubic) {
  using namespace resample;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= out_h * out_w) return;
  const ResizeJob job = jobs[blockIdx.y];
  const int y = p / out_w, x = p % out_w;
  const TapRange ty = tap_range(job.top, job.box_h, out_h, job.height, y, bicubic);
  const TapRange tx = tap_range(job.left, job.box_w, out_w, job.width, x, bicubic);
  const double total_y = tap_total(ty, bicubic), total_x = tap_total(tx, bicubic);
  double acc[3] = {0, 0, 0};
  for (int64_t j = ty.lo; j < ty.lo + ty.count; ++j) {
    if (j < 0 || j >= job.height) continue;
    const uint8_t* row = job.src + j * job.pitch;
    double m[3] = {0, 0, 0};
    for (int64_t i = tx.lo; i < tx.lo + tx.count; ++i) {
      if (i < 0 || i >= job.width) continue;
      const double wx = tap_share(tx, i, total_x, bicubic);
      for (int c = 0; c < 3; ++c) m[c] = add_rn(m[c], mul_rn(wx, static_cast<double>(row[i * 3 + c])));
    }
    const double wy = tap_share(ty, j, total_y, bicubic);
    for (int c = 0; c < 3; ++c) acc[c] = add_rn(acc[c], mul_rn(wy, static_cast<double>(static_cast<float>(m[c]))));
  }
  const int ox = job.flip ? out_w - 1 - x : x;
  const int64_t plane = static_cast<int64_t>(out_h) * out_w;
  uint8_t* dst = out + static_cast<int64_t>(job.slot) * 3 * plane + static_cast<int64_t>(y) * out_w + ox;
  for (int c = 0; c < 3; ++c) dst[c * plane] = static_cast<uint8_t>(rint(fmin(fmax(acc[c], 0.0), 255.0)));
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

cudaError_t launch_crop_resize(const ResizeJob* jobs, int64_t num_jobs, uint8_t* out, int64_t out_h, int64_t out_w,
                               bool bicubic, cudaStream_t stream) {
  if (num_jobs == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((out_h * out_w + kThreads - 1) / kThreads);
  crop_resize_kernel<<<dim3(blocks, static_cast<unsigned>(num_jobs)), kThreads, 0, stream>>>(
      jobs, out, static_cast<int>(out_h), static_cast<int>(out_w), bicubic);
  return cudaGetLastError();
}

}  // namespace vit::data::kernels

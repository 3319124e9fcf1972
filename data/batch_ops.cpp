// Batched device-side augmentation and the finish step (see batch_ops.h).
#include "data/batch_ops.h"

#include <cmath>

#include "data/transforms.h"

namespace vit::data {
namespace F = torch::nn::functional;

torch::Tensor to_device_async(const torch::Tensor& host, torch::Device device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

namespace {

// Pad-and-crop plus flip as one gather: for each sample, source rows oy + i and columns
// ox + j (or ox + W - 1 - j when flipped) of the zero-padded image.
torch::Tensor pad_crop_flip(const torch::Tensor& images, const AugmentSettings& s, Rng& rng) {
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3), p = s.crop == "pad_crop" ? s.padding : 0;
  const int64_t hp = h + 2 * p, wp = w + 2 * p;
  auto rows_cols = torch::empty({b, h + w}, torch::kInt64);
  int64_t* rc = rows_cols.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t oy = rng.below(2 * p + 1), ox = rng.below(2 * p + 1);
    const bool flip = s.hflip && rng.coin();
    for (int64_t y = 0; y < h; ++y) rc[i * (h + w) + y] = oy + y;
    for (int64_t x = 0; x < w; ++x) rc[i * (h + w) + h + x] = ox + (flip ? w - 1 - x : x);
  }
  auto dev = to_device_async(rows_cols, images.device());
  auto rows = dev.narrow(1, 0, h), cols = dev.narrow(1, h, w);
  auto flat = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view({b, 1, h * w}).expand({b, 3, h * w});
  auto padded = p > 0 ? F::pad(images, F::PadFuncOptions({p, p, p, p})) : images;
  return padded.reshape({b, 3, hp * wp}).gather(2, flat).view({b, 3, h, w});
}

// One box per sample, sampled with an affine grid: crop + flip + resize in one grid_sample.
torch::Tensor sample_boxes(const torch::Tensor& images, const std::vector<CropBox>& boxes,
                           const std::vector<bool>& flips, const AugmentSettings& s) {
  const int64_t b = images.size(0);
  const double h = static_cast<double>(images.size(2)), w = static_cast<double>(images.size(3));
  auto theta = torch::zeros({b, 2, 3}, torch::kFloat32);
  float* t = theta.data_ptr<float>();
  for (int64_t i = 0; i < b; ++i) {
    const CropBox& box = boxes[i];
    t[i * 6 + 0] = static_cast<float>(box.width / w * (flips[i] ? -1 : 1));
    t[i * 6 + 2] = static_cast<float>((2 * box.left + box.width) / w - 1);
    t[i * 6 + 4] = static_cast<float>(box.height / h);
    t[i * 6 + 5] = static_cast<float>((2 * box.top + box.height) / h - 1);
  }
  auto grid = F::affine_grid(to_device_async(theta, images.device()), {b, 3, s.out_h, s.out_w}, false);
  auto out = F::grid_sample(images.to(torch::kFloat32), grid,
                            F::GridSampleFuncOptions()
                                .mode(s.bicubic ? F::GridSampleFuncOptions::mode_t(torch::kBicubic)
                                                : F::GridSampleFuncOptions::mode_t(torch::kBilinear))
                                .padding_mode(torch::kBorder)
                                .align_corners(false));
  return s.bicubic ? out.clamp_(0, 255) : out;
}

}  // namespace

torch::Tensor augment_resident(const torch::Tensor& images, const AugmentSettings& s, uint64_t key) {
  Rng rng(key);
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  torch::Tensor out;
  if (s.train && s.crop == "random_resized_crop") {
    std::vector<CropBox> boxes;
    std::vector<bool> flips;
    for (int64_t i = 0; i < b; ++i) {
      boxes.push_back(random_resized_crop_box(h, w, s.scale, s.ratio, rng));
      flips.push_back(s.hflip && rng.coin());
    }
    return sample_boxes(images, boxes, flips, s);
  }
  if (!s.train && s.eval_crop_fraction < 1.0) {
    return sample_boxes(images, std::vector<CropBox>(b, center_crop_box(h, w, s.out_h, s.out_w, s.eval_crop_fraction)),
                        std::vector<bool>(b, false), s);
  }
  out = s.train && (s.crop == "pad_crop" || s.hflip) ? pad_crop_flip(images, s, rng) : images;
  out = out.to(torch::kFloat32);
  if (h != s.out_h || w != s.out_w) {
    out = F::interpolate(out, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{s.out_h, s.out_w})
                                  .mode(s.bicubic ? F::InterpolateFuncOptions::mode_t(torch::kBicubic)
                                                  : F::InterpolateFuncOptions::mode_t(torch::kBilinear))
                                  .align_corners(false));
    if (s.bicubic) out.clamp_(0, 255);
  }
  return out;
}

BatchFinisher::BatchFinisher(const DataConfig& config, const LoaderOptions& options)
    : mixup_alpha_(config.mixup_alpha),
      cutmix_alpha_(config.cutmix_alpha),
      num_classes_(options.num_classes),
      train_(options.train),
      image_dtype_(options.image_dtype) {
  auto mean = torch::tensor(config.mean, torch::kFloat64), std = torch::tensor(config.std, torch::kFloat64);
  scale_ = (1.0 / (255.0 * std)).to(torch::kFloat32).view({1, 3, 1, 1}).to(options.device);
  shift_ = (-mean / std).to(torch::kFloat32).view({1, 3, 1, 1}).to(options.device);
}

Batch BatchFinisher::finish(torch::Tensor images, torch::Tensor labels, torch::Tensor mask, uint64_t key) const {
  Batch batch;
  // One kernel: shift + x * scale (type promotion turns uint8 into float here).
  batch.images = torch::addcmul(shift_, images.to(torch::kFloat32), scale_);
  batch.labels = labels;
  batch.mask = mask;
  const bool mixup = mixup_alpha_ > 0, cutmix = cutmix_alpha_ > 0;
  if (train_ && (mixup || cutmix)) mix(batch, key);
  batch.images = batch.images.to(image_dtype_);  // no-op for fp32
  return batch;
}

void BatchFinisher::mix(Batch& batch, uint64_t key) const {
  const bool mixup = mixup_alpha_ > 0, cutmix = cutmix_alpha_ > 0;
  Rng rng(key);
  const bool use_cutmix = cutmix && (!mixup || rng.coin());
  double lam = rng.beta(use_cutmix ? cutmix_alpha_ : mixup_alpha_, use_cutmix ? cutmix_alpha_ : mixup_alpha_);
  auto partner = batch.images.flip(0);
  if (use_cutmix) {  // a box of area (1 - lam) taken from the partner; lam corrected to the clipped area
    const int64_t h = batch.images.size(2), w = batch.images.size(3);
    const double cut = std::sqrt(1.0 - lam);
    const int64_t ch = static_cast<int64_t>(h * cut), cw = static_cast<int64_t>(w * cut);
    const int64_t cy = rng.below(h), cx = rng.below(w);
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, h), y1 = std::clamp<int64_t>(cy + ch / 2, 0, h);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, w), x1 = std::clamp<int64_t>(cx + cw / 2, 0, w);
    using torch::indexing::Slice;
    batch.images.index_put_({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)},
                            partner.index({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)}));
    lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  } else {
    batch.images = batch.images.mul_(lam).add_(partner, 1.0 - lam);
  }
  auto one_hot = F::one_hot(batch.labels, num_classes_).to(torch::kFloat32);
  batch.targets = one_hot.mul(lam).add_(one_hot.flip(0), 1.0 - lam);
}

}  // namespace vit::data

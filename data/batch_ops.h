// Whole-batch tensor operations on the device, shared by both loaders:
//  - augment_resident: pad-and-crop / RandomResizedCrop / flip / resize of a uint8 batch that
//    is already on the device (one gather or one grid_sample per batch, no per-sample work);
//  - BatchFinisher: uint8 -> float, mean/std normalisation (one fused kernel), mixup / cutmix
//    with soft targets, the mask.
// Random decisions are drawn on the host from key(seed, epoch, step, rank) (random.h) and
// shipped as one small tensor, so the device work is deterministic and needs no generator.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "data/config.h"
#include "data/loader.h"
#include "data/random.h"

namespace vit::data {

// Moves a small host tensor to `device` without a host sync (pinned staging on CUDA).
torch::Tensor to_device_async(const torch::Tensor& host, torch::Device device);

struct AugmentSettings {
  bool train = true;
  std::string crop = "pad_crop";  // pad_crop | random_resized_crop | none
  int64_t padding = 4;
  std::vector<double> scale{0.08, 1.0}, ratio{0.75, 4.0 / 3.0};
  bool hflip = true;
  double eval_crop_fraction = 1.0;  // < 1 only for random_resized_crop pipelines
  int64_t out_h = 32, out_w = 32;
  bool bicubic = false;
};

// images: uint8 [B, 3, H, W] on the device. Returns float32 [B, 3, out_h, out_w] in 0..255.
torch::Tensor augment_resident(const torch::Tensor& images, const AugmentSettings& settings, uint64_t key);

class BatchFinisher {
 public:
  BatchFinisher(const DataConfig& config, const LoaderOptions& options);
  // images: uint8 or float (0..255) [B, 3, H, W]; labels int64 [B]; mask float [B]; all on the
  // device. Normalises and, in training with mixup/cutmix on, mixes the batch, in fp32; returns
  // the images as LoaderOptions::image_dtype.
  Batch finish(torch::Tensor images, torch::Tensor labels, torch::Tensor mask, uint64_t key) const;

 private:
  void mix(Batch& batch, uint64_t key) const;  // mixup or cutmix (fp32 images), soft targets

  torch::Tensor scale_, shift_;  // [1, 3, 1, 1]: x * scale + shift == (x / 255 - mean) / std
  double mixup_alpha_, cutmix_alpha_;
  int64_t num_classes_;
  bool train_;
  torch::ScalarType image_dtype_;
};

}  // namespace vit::data

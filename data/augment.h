// Augmentation: the one description of what happens to a training image, and its execution.
//
// Per sample, in this order (timm's order for a training transform):
//   1. geometry   crop (pad_crop | random_resized_crop | none), horizontal flip, resize to the
//                 model's size; evaluation: resize (+ centre crop)
//   2. RandAugment data.rand_augment (timm's "rand-m9-mstd0.5-inc1" strings): per image, n ops
//                 drawn with replacement, each applied with probability p at a noisy magnitude;
//                 or "trivial": TrivialAugment, one op at a uniform magnitude
//   3. normalise  (x / 255 - mean) / std
//   4. erase      random erasing (timm's reprob, per-pixel normal noise), data.random_erase_prob
// Per batch: 5. mix: mixup or cutmix with the batch reversed (soft targets).
//
// Every random decision is drawn on the host from a key that is a pure function of
// (seed, epoch, position in the epoch's global order) (`sample_key`, random.h), never of the
// rank, thread or batch layout: the same sample at the same position is augmented the same way
// on any number of ranks, and on resume. Mixing pairs the samples of one micro-batch, keyed by
// its first position, so it too is the same on any number of ranks that keep
// train.micro_batch_size.
//
// Execution: the resident loader runs 1-5 on whole batches on the device; the streaming loader
// runs 1 per sample on its worker threads (transforms.h: libjpeg-turbo, scaled DCT), or with
// GPU decode on the device after nvJPEG (gpu_decode.h, the same draws and taps), and 2-5 on
// the device. Steps 2 and 4 are the kernels of augment_ops.h: one thread per pixel on a GPU, the
// same arithmetic in a loop on the CPU (augment_cpu.cpp), so both give the same pixels.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/augment_ops.h"
#include "data/config.h"
#include "data/loader.h"
#include "data/random.h"
#include "data/transforms.h"

namespace vit::data {

// timm's RandAugment configuration string: "rand" then dash-separated m<magnitude>, n<ops>,
// mstd<magnitude noise std> (> 100: uniform in [0, m]), mmax<upper bound>, p<probability per op>,
// inc<0|1> (the "increasing" op set). "trivial": TrivialAugment (torchvision's
// TrivialAugmentWide: one of its 14 ops per image at one of 31 magnitudes, both uniform). "" or
// "none": off. Throws ConfigError naming data.rand_augment.
struct RandAugmentSpec {
  int num_ops = 0;  // 0: off
  double magnitude = 10, magnitude_std = 0, magnitude_max = 10, prob = 0.5;
  bool increasing = false;
  bool trivial = false;  // TrivialAugment (num_ops 1); the other fields unused
};
RandAugmentSpec parse_rand_augment(const std::string& spec);

// The key of the sample at `position` of `epoch`'s global order (Note [Sharding and tail rule]).
inline uint64_t sample_key(uint64_t seed, int64_t epoch, int64_t position) {
  return mix_key({seed, tag(Stream::kAugment), static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)});
}

struct AugmentPolicy {
  bool train = true;
  std::string crop = "pad_crop";  // pad_crop | random_resized_crop | none
  int64_t padding = 4;
  std::vector<double> scale{0.08, 1.0}, ratio{0.75, 4.0 / 3.0};
  bool hflip = true;
  double eval_crop_fraction = 1.0;  // < 1 only for random_resized_crop pipelines
  int64_t out_h = 32, out_w = 32;
  bool bicubic = false;
  RandAugmentSpec rand_augment;
  std::array<float, 3> fill{128.f, 128.f, 128.f};  // RandAugment's geometric ops: the data mean (timm's img_mean)
  double erase_prob = 0.0;
  double mixup_alpha = 0.0, cutmix_alpha = 0.0;

  AugmentPolicy() = default;
  AugmentPolicy(const DataConfig& config, const LoaderOptions& options);
  bool mixes() const { return train && (mixup_alpha > 0 || cutmix_alpha > 0); }
};

// Step 1 for one sample of a src_h x src_w image: the region to read and whether to mirror it.
struct GeometryDraw {
  CropBox box;
  bool flip = false;
};
GeometryDraw draw_geometry(const AugmentPolicy& policy, uint64_t key, int64_t src_h, int64_t src_w);

// Steps 2 and 4 for one sample at the model's size (nothing to do: every op kNone, no erase box).
aug::SamplePlan draw_plan(const AugmentPolicy& policy, uint64_t key);

// The inverse affine matrix of torchvision's F.affine / F.rotate (centre-relative pixel
// coordinates), turned into LayerPlan::m for an h x w image. Exposed for the tests.
aug::LayerPlan affine_layer(double angle_deg, double translate_x, double translate_y, double shear_x_deg,
                            double shear_y_deg, bool about_corner, int64_t h, int64_t w);

// Runs the planned RandAugment layers (step 2) over `images` (float [B, 3, H, W] holding whole
// numbers 0..255, on the CPU or a GPU), in place. `plans` is a uint8 tensor of B SamplePlans
// on the same device. Defined in augment_cpu.cpp / augment_cuda.cpp.
void run_layers(torch::Tensor& images, const torch::Tensor& plans, int num_layers, const std::array<float, 3>& fill);
// Step 4 over normalised float images, in place.
void run_erase(torch::Tensor& images, const torch::Tensor& plans);
// The plans as SamplePlans, after checking both tensors' layout, size and device (DataError).
const aug::SamplePlan* checked_plans(const torch::Tensor& images, const torch::Tensor& plans);
// The CPU versions (the device ones fall back to them for CPU tensors).
void run_layers_cpu(torch::Tensor& images, const torch::Tensor& plans, int num_layers, const std::array<float, 3>& fill);
void run_erase_cpu(torch::Tensor& images, const torch::Tensor& plans);

// Moves a small host tensor to `device` without a host sync (pinned staging on CUDA); a tensor
// already on a device is moved with .to().
torch::Tensor to_device_async(const torch::Tensor& host, torch::Device device);

class Augmenter {
 public:
  Augmenter(const DataConfig& config, const LoaderOptions& options);

  const AugmentPolicy& policy() const { return policy_; }

  // Step 1 on a uint8 batch [B, 3, H, W] already on the device (resident sets): one gather
  // (pad-crop + flip) or one grid_sample (random-resized crop + flip, evaluation crop), then a
  // resize when the stored size is not the model's. Float [B, 3, out_h, out_w], 0..255.
  torch::Tensor geometry(const torch::Tensor& images, const std::vector<uint64_t>& keys) const;

  // Steps 2-5 on a batch at the model's size (uint8, or float 0..255 from geometry()), on the
  // device. keys: one per sample (unused in evaluation); mix: the micro-batch's mixing key.
  Batch finish(torch::Tensor images, torch::Tensor labels, torch::Tensor mask, const std::vector<uint64_t>& keys,
               uint64_t mix) const;

 private:
  void mix(Batch& batch, uint64_t key) const;  // mixup or cutmix (fp32 images), soft targets

  AugmentPolicy policy_;
  torch::Tensor scale_, shift_;  // [1, 3, 1, 1]: x * scale + shift == (x / 255 - mean) / std
  int64_t num_classes_;
  torch::ScalarType image_dtype_;
};

}  // namespace vit::data

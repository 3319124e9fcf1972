// DataConfig: where the data lives and how each sample is decoded and augmented.
// Filled from the YAML section `data`. The data library gets rank and world size as plain
// numbers (LoaderOptions), never from MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vit::data {

struct DataConfig {
  // synthetic | cifar10 | cifar100 | image_folder | tar_shards
  std::string dataset = "synthetic";
  std::string path;        // train split: a folder, a cifar-*-batches-bin folder, a brace pattern or list file
  std::string eval_path;   // eval split where it lives elsewhere ("" = derived from path where the layout says)
  int64_t num_classes = 10;           // synthetic: how many classes; checked against model.num_classes
  int64_t synthetic_train_size = 8192;
  int64_t synthetic_eval_size = 1024;
  int64_t synthetic_image_size = 32;  // stored resolution of the synthetic images
  int64_t synthetic_seed = 0;         // the synthetic set itself (fixed across training seeds)
  std::string cifar100_labels = "fine";  // cifar100: fine | coarse
  int64_t num_workers = 4;             // loader threads (host-side datasets)
  int64_t prefetch_batches = 4;        // bounded queue depth
  std::string on_corrupt = "skip";     // skip | fail: a JPEG that does not decode
  std::string decode = "auto";         // auto | gpu | cpu: where streamed JPEGs are decoded (gpu_decode.h)
  int64_t shuffle_buffer = 2048;       // tar_shards: sample-level shuffle buffer per worker
  bool device_resident = true;         // small sets (CIFAR, synthetic): keep uint8 on the device, augment there
  // Augmentation (train split).
  std::string train_crop = "pad_crop";  // pad_crop (CIFAR) | random_resized_crop | none
  int64_t crop_padding = 4;
  std::vector<double> rrc_scale = {0.08, 1.0};
  std::vector<double> rrc_ratio = {0.75, 1.3333333333333333};
  bool hflip = true;
  std::string rand_augment = "none";  // timm's RandAugment string, e.g. rand-m9-mstd0.5-inc1 (augment.h)
  double random_erase_prob = 0.0;     // timm's reprob: erase a box with per-pixel noise (0 disables)
  int64_t repeated_augment = 1;       // each training sample this many times per epoch (1 = off; sampler.h)
  double mixup_alpha = 0.0;   // 0 disables
  double cutmix_alpha = 0.0;  // 0 disables; with both on, each batch picks one with probability 1/2
  std::string resize_interpolation = "bilinear";  // bilinear | bicubic, when the model's size differs
  double eval_crop_fraction = 0.875;  // resize + centre crop for large-image evaluation
  std::vector<double> mean = {0.4914, 0.4822, 0.4465};
  std::vector<double> std = {0.2470, 0.2435, 0.2616};
};

// Cross-field checks; messages name `data.<key>`.
void validate(const DataConfig& config);
// That data.path (and data.eval_path) exist: every shard of a pattern or list for tar_shards.
// A ConfigError naming the key and the fix (for CIFAR-10: the download command).
void check_paths(const DataConfig& config);

}  // namespace vit::data

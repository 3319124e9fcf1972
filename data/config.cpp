// validate(DataConfig): the cross-field checks of the `data` section, run once at start-up.
// Messages name the key (`data.<key>`) and say what to change. check_paths(DataConfig): that the
// data it names is there, before a run (or --dry-run) touches anything; what is inside the files
// is checked by the readers, which name the file.
#include "data/config.h"

#include <algorithm>
#include <filesystem>

#include "core/errors.h"
#include "core/strings.h"
#include "data/augment.h"
#include "data/shards.h"

namespace vit::data {
namespace {

void check_one_of(const std::string& key, const std::string& value, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  std::string hint = nearest(value, allowed);
  VIT_THROW(ConfigError, "data.", key, ": unknown value '", value, "'; use one of ", join(allowed, ", "),
            hint.empty() ? std::string() : str(" (did you mean '", hint, "'?)"));
}

}  // namespace

void validate(const DataConfig& c) {
  check_one_of("dataset", c.dataset, {"synthetic", "cifar10", "cifar100", "image_folder", "tar_shards"});
  if (c.dataset != "synthetic") {
    VIT_CHECK(!c.path.empty(), ConfigError, "data.path: dataset '", c.dataset,
              "' needs a path (the folder, or for tar_shards a brace pattern or list file); set data.path");
  }
  VIT_CHECK(c.num_classes >= 2, ConfigError, "data.num_classes: must be >= 2, got ", c.num_classes);
  if (c.dataset == "cifar10") {
    VIT_CHECK(c.num_classes == 10, ConfigError, "data.num_classes: cifar10 has 10 classes, got ", c.num_classes,
              "; set data.num_classes: 10");
  }
  if (c.dataset == "cifar100") {
    check_one_of("cifar100_labels", c.cifar100_labels, {"fine", "coarse"});
    const int64_t k = c.cifar100_labels == "fine" ? 100 : 20;
    VIT_CHECK(c.num_classes == k, ConfigError, "data.num_classes: cifar100 with ", c.cifar100_labels,
              " labels has ", k, " classes, got ", c.num_classes, "; set data.num_classes: ", k);
  }
  if (c.dataset == "synthetic") {
    VIT_CHECK(c.synthetic_train_size >= 1 && c.synthetic_eval_size >= 1, ConfigError,
              "data.synthetic_train_size / data.synthetic_eval_size: must be >= 1");
    VIT_CHECK(c.synthetic_image_size >= 8 && c.synthetic_image_size <= 1024, ConfigError,
              "data.synthetic_image_size: must be in [8, 1024], got ", c.synthetic_image_size);
  }
  VIT_CHECK(c.num_workers >= 1 && c.num_workers <= 256, ConfigError, "data.num_workers: must be in [1, 256], got ",
            c.num_workers);
  VIT_CHECK(c.prefetch_batches >= 1, ConfigError, "data.prefetch_batches: must be >= 1, got ", c.prefetch_batches);
  check_one_of("on_corrupt", c.on_corrupt, {"skip", "fail"});
  check_one_of("decode", c.decode, {"auto", "gpu", "cpu"});
  VIT_CHECK(c.shuffle_buffer >= 1, ConfigError, "data.shuffle_buffer: must be >= 1 (1 = no sample shuffle), got ",
            c.shuffle_buffer);
  check_one_of("train_crop", c.train_crop, {"pad_crop", "random_resized_crop", "none"});
  VIT_CHECK(c.crop_padding >= 0, ConfigError, "data.crop_padding: must be >= 0, got ", c.crop_padding);
  VIT_CHECK(c.rrc_scale.size() == 2 && c.rrc_scale[0] > 0 && c.rrc_scale[0] <= c.rrc_scale[1] && c.rrc_scale[1] <= 1,
            ConfigError, "data.rrc_scale: must be [min, max] with 0 < min <= max <= 1, e.g. [0.08, 1.0]");
  VIT_CHECK(c.rrc_ratio.size() == 2 && c.rrc_ratio[0] > 0 && c.rrc_ratio[0] <= c.rrc_ratio[1], ConfigError,
            "data.rrc_ratio: must be [min, max] with 0 < min <= max, e.g. [0.75, 1.3333]");
  parse_rand_augment(c.rand_augment);  // throws a ConfigError naming data.rand_augment
  VIT_CHECK(c.random_erase_prob >= 0 && c.random_erase_prob <= 1, ConfigError,
            "data.random_erase_prob: must be in [0, 1] (0 disables; timm's recipes use 0.25), got ", c.random_erase_prob);
  VIT_CHECK(c.repeated_augment >= 1 && c.repeated_augment <= 64, ConfigError,
            "data.repeated_augment: must be in [1, 64] (1 = off; 3 in DeiT's recipe), got ", c.repeated_augment);
  VIT_CHECK(c.repeated_augment == 1 || c.dataset != "tar_shards", ConfigError,
            "data.repeated_augment: tar shards are read in order per rank, not by index; set it to 1 for tar_shards");
  VIT_CHECK(c.mixup_alpha >= 0, ConfigError, "data.mixup_alpha: must be >= 0 (0 disables), got ", c.mixup_alpha);
  VIT_CHECK(c.cutmix_alpha >= 0, ConfigError, "data.cutmix_alpha: must be >= 0 (0 disables), got ", c.cutmix_alpha);
  check_one_of("resize_interpolation", c.resize_interpolation, {"bilinear", "bicubic"});
  VIT_CHECK(c.eval_crop_fraction > 0 && c.eval_crop_fraction <= 1, ConfigError,
            "data.eval_crop_fraction: must be in (0, 1], got ", c.eval_crop_fraction, " (0.875 is usual)");
  VIT_CHECK(c.mean.size() == 3 && c.std.size() == 3, ConfigError,
            "data.mean / data.std: need 3 values (R, G, B), got ", c.mean.size(), " and ", c.std.size());
  for (double s : c.std) VIT_CHECK(s > 0, ConfigError, "data.std: every value must be > 0, got ", s);
}

void check_paths(const DataConfig& c) {
  namespace fs = std::filesystem;
  if (c.dataset == "synthetic") return;
  const bool cifar = c.dataset == "cifar10" || c.dataset == "cifar100";
  const std::string fix = cifar && c.dataset == "cifar10"
                              ? "download CIFAR-10 with `python3 launch/get_cifar10.py` (into datasets/, where the "
                                "configs look) or point data.path at your copy of cifar-10-batches-bin/"
                              : "fix the path";
  auto check = [&](const std::string& key, const std::string& path) {
    if (path.empty()) return;
    if (c.dataset == "tar_shards") {
      for (const auto& shard : expand_shard_spec(path))
        VIT_CHECK(fs::is_regular_file(shard), ConfigError, "data.", key, ": shard '", shard,
                  "' does not exist; fix the pattern or the list file");
      return;
    }
    VIT_CHECK(fs::exists(path), ConfigError, "data.", key, ": '", path, "' does not exist; ", fix);
  };
  check("path", c.path);
  check("eval_path", c.eval_path);
}

}  // namespace vit::data

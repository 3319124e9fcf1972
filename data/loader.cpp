// make_loader: picks the data set reader and the loader implementation; LoaderPosition JSON.
//
//   synthetic, cifar10, cifar100        -> resident loader (always: they fit in memory)
//   image_folder, device_resident, small -> decoded once, resident loader
//   image_folder otherwise, tar_shards   -> streaming loader
#include "data/loader.h"

#include "core/errors.h"
#include "core/log.h"
#include "data/cifar.h"
#include "data/image_folder.h"
#include "data/resident_loader.h"
#include "data/sampler.h"
#include "data/shards.h"
#include "data/stream_loader.h"
#include "data/synthetic.h"

namespace vit::data {
namespace {

void check_labels(int64_t num_classes_in_data, const LoaderOptions& options, const std::string& where) {
  VIT_CHECK(num_classes_in_data <= options.num_classes, ConfigError, where, " has labels up to ",
            num_classes_in_data - 1, " but the model has ", options.num_classes,
            " classes; set model.num_classes (and data.num_classes) to at least ", num_classes_in_data);
}

std::unique_ptr<Loader> resident(TensorSet set, const DataConfig& config, const LoaderOptions& options,
                                 const std::string& where) {
  VIT_CHECK(set.size() > 0, DataError, where, ": holds no samples");
  check_labels(set.labels.max().item<int64_t>() + 1, options, where);
  return make_resident_loader(std::move(set), config, options);
}

}  // namespace

Json LoaderPosition::to_json() const {
  Json j = Json::object();
  j["epoch"] = epoch;
  j["step"] = step;
  return j;
}

LoaderPosition LoaderPosition::from_json(const Json& json) {
  try {
    return {json.at("epoch").get<int64_t>(), json.at("step").get<int64_t>()};
  } catch (const std::exception& e) {
    VIT_THROW(DataError, "loader position: expected {\"epoch\": int, \"step\": int} in the checkpoint (", e.what(),
              ")");
  }
}

std::unique_ptr<Loader> make_loader(const DataConfig& config, const LoaderOptions& options) {
  validate(config);
  VIT_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size, ConfigError,
            "data loader: rank ", options.rank, " is outside world_size ", options.world_size);
  VIT_CHECK(options.micro_batch_size >= 1, ConfigError, "micro_batch_size must be >= 1");
  VIT_CHECK(options.image_height >= 1 && options.image_width >= 1, ConfigError, "model image size must be >= 1");
  const bool train = options.train;
  const std::string split = train ? "train" : "eval";
  std::unique_ptr<Loader> loader;
  if (config.dataset == "synthetic") {
    SyntheticOptions s;
    s.num_samples = train ? config.synthetic_train_size : config.synthetic_eval_size;
    s.num_classes = config.num_classes;
    s.image_size = config.synthetic_image_size;
    s.seed = static_cast<uint64_t>(config.synthetic_seed);
    s.train = train;
    loader = resident(make_synthetic(s), config, options, "synthetic " + split + " set");
  } else if (config.dataset == "cifar10" || config.dataset == "cifar100") {
    const std::string path = !train && !config.eval_path.empty() ? config.eval_path : config.path;
    loader = resident(read_cifar(path, train, config.dataset == "cifar10" ? 10 : 100, config.cifar100_labels == "fine"),
                      config, options, path);
  } else if (config.dataset == "image_folder") {
    const std::string folder = resolve_split_folder(config.path, config.eval_path, train);
    auto source = std::make_shared<ImageFolderSource>(folder);
    check_labels(source->num_classes(), options, folder);
    if (config.device_resident) {
      auto set = decode_all(*source, static_cast<int>(config.num_workers), config.on_corrupt == "fail");
      if (set) return resident(std::move(*set), config, options, folder);
      log_info("data: ", folder, " is too large or has mixed image sizes to keep resident; streaming it");
    }
    auto sampler = std::make_shared<ShardedSampler>(SamplerOptions{
        source->size(), options.rank, options.world_size, options.micro_batch_size, options.seed, train,
        options.micro_batches_per_step, config.repeated_augment});
    loader = make_stream_loader(source, sampler, config, options);
  } else {  // tar_shards
    VIT_CHECK(train || !config.eval_path.empty(), ConfigError,
              "data.eval_path: tar_shards needs the evaluation shards named there (a brace pattern or list file)");
    const std::string spec = train ? config.path : config.eval_path;
    auto source = std::make_shared<TarShardSource>(spec, static_cast<int>(config.num_workers),
                                                   config.on_corrupt == "skip", options.rank == 0);
    check_labels(source->num_classes(), options, spec);
    ShardPlanOptions plan{options.rank,         options.world_size, options.micro_batch_size,
                          options.seed,         train,              config.shuffle_buffer,
                          options.micro_batches_per_step, options.plan_world_size};
    loader = make_stream_loader(source, std::make_shared<ShardPlanner>(*source, plan), config, options);
  }
  VIT_CHECK(train || loader->steps_per_epoch() > 0, DataError, "data: the ", split, " split holds no samples");
  const int64_t per_step = options.world_size * options.micro_batch_size * options.micro_batches_per_step;
  VIT_CHECK(loader->steps_per_epoch() > 0, ConfigError, "train.global_batch_size: the ", split, " split has ",
            loader->num_samples(), " samples, fewer than one optimiser step's global batch (", per_step,
            " = world_size x micro_batch_size x accumulated micro-batches); lower train.global_batch_size or "
            "train.micro_batch_size, or use more data");
  return loader;
}

}  // namespace vit::data

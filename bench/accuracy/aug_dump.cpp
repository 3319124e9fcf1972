// aug_dump: writes what vitrain's resident loader feeds the model, for bench/accuracy/audit_aug.py.
//
// For `steps` training batches (epoch 0) of an ImageFolder set, and the first eval batch, writes
// raw binary files into OUT: the source images (uint8, the decoded set indexed by the sampler's
// ids), the augmented images before normalisation (Augmenter::geometry with the loader's keys),
// the finished batch from Loader::next() (normalised, mixed), labels and soft targets.
//
// Not part of the CMake build; compile by hand against build/ (see bench/accuracy/README.md):
//   aug_dump TRAIN_DIR EVAL_DIR OUT [batch=64] [steps=20] [mixup=0.8] [cutmix=1.0]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "data/augment.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/random.h"
#include "data/resident_loader.h"
#include "data/sampler.h"

using namespace vit::data;

static void write(const std::string& path, const torch::Tensor& t) {
  auto c = t.contiguous().cpu();
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: aug_dump TRAIN_DIR EVAL_DIR OUT [batch] [steps] [mixup] [cutmix]\n";
    return 2;
  }
  const std::string train_dir = argv[1], eval_dir = argv[2], out = argv[3];
  const int64_t b = argc > 4 ? std::stoll(argv[4]) : 64, steps = argc > 5 ? std::stoll(argv[5]) : 20;
  DataConfig cfg;  // defaults = configs/cifar10/pretrain.yaml's data section except dataset/path
  cfg.dataset = "image_folder";
  cfg.path = train_dir;
  cfg.eval_path = eval_dir;
  cfg.train_crop = "pad_crop";
  cfg.crop_padding = 4;
  cfg.hflip = true;
  cfg.mixup_alpha = argc > 6 ? std::stod(argv[6]) : 0.8;
  cfg.cutmix_alpha = argc > 7 ? std::stod(argv[7]) : 1.0;
  LoaderOptions lo;
  lo.micro_batch_size = b;
  lo.seed = 0;
  lo.device = torch::kCPU;
  lo.image_height = lo.image_width = 32;
  lo.num_classes = 10;
  lo.train = true;
  auto loader = make_loader(cfg, lo);
  ImageFolderSource source(train_dir);
  auto set = *decode_all(source, 4, true);
  ShardedSampler sampler({set.size(), 0, 1, b, lo.seed, true});
  const Augmenter augmenter(cfg, lo);  // as ResidentLoader builds it
  for (int64_t step = 0; step < steps; ++step) {
    Batch batch = loader->next();
    auto ids_v = sampler.indices(0, step);
    auto ids = torch::tensor(ids_v, torch::kInt64);
    auto raw = set.images.index_select(0, ids);
    std::vector<uint64_t> keys;
    for (int64_t j = 0; j < b; ++j) keys.push_back(sample_key(lo.seed, 0, first_position(step, 0, 1, b) + j));
    auto aug = augmenter.geometry(raw, keys);
    const std::string p = out + "/step" + std::to_string(step) + "_";
    write(p + "ids.i64", ids);
    write(p + "raw.u8", raw);
    write(p + "aug.f32", aug);
    write(p + "fin.f32", batch.images);
    write(p + "labels.i64", batch.labels);
    write(p + "setlabels.i64", set.labels.index_select(0, ids));
    if (batch.targets.defined()) write(p + "targets.f32", batch.targets);
  }
  lo.train = false;
  auto eval_loader = make_loader(cfg, lo);
  Batch eb = eval_loader->next();
  ImageFolderSource eval_source(eval_dir);
  auto eval_set = *decode_all(eval_source, 4, true);
  write(out + "/eval_fin.f32", eb.images);
  write(out + "/eval_labels.i64", eb.labels);
  write(out + "/eval_raw.u8", eval_set.images.narrow(0, 0, b));
  write(out + "/eval_setlabels.i64", eval_set.labels.narrow(0, 0, b));
  std::printf("wrote %lld train batches of %lld and one eval batch to %s\n", static_cast<long long>(steps),
              static_cast<long long>(b), out.c_str());
  return 0;
}

// vit-data: pack an ImageFolder tree into tar shards, inspect shards, verify them, and export
// the synthetic set in the CIFAR-10 binary layout (to look at it or train on it elsewhere).
//
//   vit-data pack --input DIR --output OUT/train-{00000..00009}.tar [--seed S]
//   vit-data inspect SHARD_SPEC            (counts per shard and per class)
//   vit-data verify SHARD_SPEC             (decodes every image; non-zero exit if any fails)
//   vit-data synthetic --output DIR [--train N --eval M --seed S]
// Packing shuffles samples across shards (seeded), so each shard holds a mix of classes.
#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>

#include "core/errors.h"
#include "core/files.h"
#include "core/strings.h"
#include "data/cifar.h"
#include "data/image.h"
#include "data/image_folder.h"
#include "data/random.h"
#include "data/shards.h"
#include "data/synthetic.h"
#include "data/tar.h"

namespace po = boost::program_options;
using namespace vit;
using namespace vit::data;

namespace {

int pack(const po::variables_map& vm) {
  ImageFolderSource source(vm["input"].as<std::string>());
  const auto shards = expand_shard_spec(vm["output"].as<std::string>());
  const auto order = permutation(source.size(), mix_key({vm["seed"].as<uint64_t>()}));
  const int64_t n = source.size(), s = static_cast<int64_t>(shards.size());
  std::filesystem::create_directories(std::filesystem::path(shards[0]).parent_path().empty()
                                          ? "."
                                          : std::filesystem::path(shards[0]).parent_path());
  for (int64_t k = 0; k < s; ++k) {  // shard k holds positions [k n / s, (k + 1) n / s): sizes differ by <= 1
    TarWriter writer(shards[k]);
    for (int64_t p = k * n / s; p < (k + 1) * n / s; ++p) {
      const int64_t i = order[p];
      char key[32];
      std::snprintf(key, sizeof(key), "%09lld", static_cast<long long>(p));
      writer.add(std::string(key) + ".jpg", source.read(i));
      writer.add(std::string(key) + ".cls", std::to_string(source.label(i)));
    }
    writer.close();
  }
  std::cout << "packed " << n << " samples of " << source.num_classes() << " classes into " << s << " shards\n";
  std::cout << "classes (index order): " << join(source.classes(), ", ") << "\n";
  return 0;
}

int inspect(const std::string& spec, bool verify) {
  TarShardSource source(spec, 4);
  std::vector<int64_t> per_class(static_cast<size_t>(source.num_classes()), 0);
  int64_t bad = 0;
  for (int64_t s = 0; s < source.num_shards(); ++s) {
    std::cout << expand_shard_spec(spec)[s] << ": " << source.shard_begin(s + 1) - source.shard_begin(s)
              << " samples\n";
  }
  for (int64_t i = 0; i < source.size(); ++i) {
    ++per_class[source.label(i)];
    if (!verify) continue;
    try {
      decode_jpeg(source.read(i), source.name(i));
    } catch (const DataError& e) {
      std::cout << "corrupt: " << e.what() << "\n";
      ++bad;
    }
  }
  std::cout << source.size() << " samples, " << source.num_classes() << " classes; per class:";
  for (int64_t c : per_class) std::cout << " " << c;
  std::cout << "\n";
  if (verify) std::cout << (bad == 0 ? "all images decode\n" : str(bad, " images do not decode\n"));
  return bad == 0 ? 0 : 1;
}

int synthetic(const po::variables_map& vm) {
  const std::string out = vm["output"].as<std::string>() + "/cifar-10-batches-bin";
  std::filesystem::create_directories(out);
  SyntheticOptions o;
  o.seed = vm["seed"].as<uint64_t>();
  o.num_samples = vm["train"].as<int64_t>();
  const TensorSet train = make_synthetic(o);
  for (int f = 0; f < 5; ++f) {  // CIFAR-10 has five train files; the set is split evenly
    const int64_t lo = f * o.num_samples / 5, hi = (f + 1) * o.num_samples / 5;
    write_cifar10_file(out + "/data_batch_" + std::to_string(f + 1) + ".bin",
                       {train.images.slice(0, lo, hi), train.labels.slice(0, lo, hi)});
  }
  o.train = false;
  o.num_samples = vm["eval"].as<int64_t>();
  write_cifar10_file(out + "/test_batch.bin", make_synthetic(o));
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description opts("vit-data pack|inspect|verify|synthetic [options]");
  opts.add_options()("help,h", "this help")("command", po::value<std::string>(), "pack | inspect | verify | synthetic")(
      "shards", po::value<std::string>(), "inspect/verify: brace pattern, list file or .tar")(
      "input", po::value<std::string>(), "pack: ImageFolder root")(
      "output", po::value<std::string>(), "pack: shard brace pattern; synthetic: output folder")(
      "seed", po::value<uint64_t>()->default_value(0), "pack: shuffle seed; synthetic: data set seed")(
      "train", po::value<int64_t>()->default_value(8192), "synthetic: train samples")(
      "eval", po::value<int64_t>()->default_value(1024), "synthetic: eval samples");
  po::positional_options_description pos;
  pos.add("command", 1).add("shards", 1);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
    po::notify(vm);
    if (vm.count("help") || !vm.count("command")) {
      std::cout << opts << "\n";
      return vm.count("help") ? 0 : 2;
    }
    const std::string cmd = vm["command"].as<std::string>();
    if (cmd == "pack" && vm.count("input") && vm.count("output")) return pack(vm);
    if ((cmd == "inspect" || cmd == "verify") && vm.count("shards")) return inspect(vm["shards"].as<std::string>(), cmd == "verify");
    if (cmd == "synthetic" && vm.count("output")) return synthetic(vm);
    std::cerr << "vit-data: missing or unknown arguments for '" << cmd << "'\n" << opts << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "vit-data: " << e.what() << "\n";
    return 1;
  }
}

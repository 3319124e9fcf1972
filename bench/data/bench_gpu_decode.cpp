// The input pipeline's throughput on JPEG tar shards, one JSON line per run:
//   --mode ceiling: nvJPEG's batched decode of whole images into device memory, nothing else,
//                   from one thread (the hardware decoder's ceiling; images held in memory)
//   --mode loader:  vitrain's streaming loader as the trainer runs it (read the tar members,
//                   decode, random-resized crop + flip (train) or resize + centre crop (eval),
//                   normalise), on the GPU, with data.decode gpu or cpu and N worker threads
// bench/data/gpu_decode.py runs the rows of docs/benchmarks.md's table with it.
//   bench_gpu_decode --shards 'train-{00000..00015}.tar' --mode ceiling|loader [--decode gpu|cpu]
//                    [--workers 1] [--batch 256] [--seconds 8] [--size 224] [--split train|eval]
//                    [--folder DIR: the loader reads this ImageFolder instead of the shards]
#include <chrono>
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>
#include <torch/torch.h>

#include "core/errors.h"
#include "data/gpu_decode.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/shards.h"

using namespace vit::data;
using Clock = std::chrono::steady_clock;
namespace po = boost::program_options;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void ceiling(const std::string& shards, int64_t batch, double seconds) {
  std::string why;
  auto gpu = GpuDecoder::open(torch::Device(torch::kCUDA, 0), &why);
  VIT_CHECK(gpu != nullptr, vit::ConfigError, "no GPU decoder: ", why);
  TarShardSource source(shards, 4, false, false);
  std::vector<GpuDecodeItem> items;
  for (int64_t i = 0; i < source.size(); ++i) {
    GpuDecodeItem item;
    item.bytes = source.read(i);
    item.name = source.name(i);
    const JpegInfo info = jpeg_info(item.bytes, item.name);
    item.height = info.height;
    item.width = info.width;
    items.push_back(std::move(item));
  }
  const auto n = static_cast<int64_t>(items.size());
  auto run = [&](double limit) {
    int64_t done = 0;
    const auto start = Clock::now();
    for (int64_t first = 0; seconds_since(start) < limit; first = (first + batch) % std::max<int64_t>(n - batch, 1)) {
      std::vector<GpuDecodeItem> chunk(items.begin() + first, items.begin() + std::min(n, first + batch));
      VIT_CHECK(gpu->decode_only(chunk), vit::DataError, "nvJPEG refused a batch at image ", first);
      done += static_cast<int64_t>(chunk.size());
    }
    return static_cast<double>(done) / seconds_since(start);
  };
  run(1.0);  // warm-up: nvJPEG's buffers
  const double rate = run(seconds);
  std::printf("{\"mode\": \"ceiling\", \"backend\": \"%s\", \"img_per_s\": %.1f, \"images\": %ld, \"batch\": %ld}\n",
              gpu->describe().c_str(), rate, static_cast<long>(n), static_cast<long>(batch));
}

void loader(const std::string& shards, const std::string& folder, const std::string& decode, int64_t workers, int64_t batch, double seconds,
            int64_t size, bool train) {
  DataConfig config;
  config.dataset = folder.empty() ? "tar_shards" : "image_folder";
  config.path = config.eval_path = folder.empty() ? shards : folder;
  config.device_resident = false;
  config.num_classes = 1000;
  config.num_workers = workers;
  config.decode = decode;
  config.train_crop = "random_resized_crop";
  config.mean = {0.485, 0.456, 0.406};
  config.std = {0.229, 0.224, 0.225};
  LoaderOptions options;
  options.micro_batch_size = batch;
  options.device = torch::Device(torch::kCUDA, 0);
  options.image_height = options.image_width = size;
  options.num_classes = 1000;
  options.train = train;
  options.image_dtype = torch::kBFloat16;
  auto data = make_loader(config, options);
  auto run = [&](double limit) {
    int64_t done = 0;
    const auto start = Clock::now();
    while (seconds_since(start) < limit) {
      Batch b = data->next();
      done += b.images.size(0);
    }
    torch::cuda::synchronize();
    return static_cast<double>(done) / seconds_since(start);
  };
  run(2.0);  // warm-up: threads, pinned buffers, nvJPEG's buffers
  const double rate = run(seconds);
  std::printf(
      "{\"mode\": \"loader\", \"dataset\": \"%s\", \"decode\": \"%s\", \"workers\": %ld, \"split\": \"%s\", "
      "\"img_per_s\": %.1f, \"batch\": %ld, \"size\": %ld}\n",
      config.dataset.c_str(), decode.c_str(), static_cast<long>(workers), train ? "train" : "eval", rate, static_cast<long>(batch),
      static_cast<long>(size));
}

}  // namespace

int main(int argc, char** argv) {
  std::string shards, folder, mode, decode, split;
  int64_t workers = 1, batch = 256, size = 224;
  double seconds = 8;
  po::options_description opts("bench_gpu_decode");
  opts.add_options()("help", "this text")("shards", po::value(&shards)->required(), "tar shards (brace pattern)")(
      "folder", po::value(&folder), "loader: an ImageFolder (class folders of JPEGs) to read instead of the shards")(
      "mode", po::value(&mode)->default_value("loader"), "ceiling | loader")(
      "decode", po::value(&decode)->default_value("gpu"), "loader: gpu | cpu")(
      "workers", po::value(&workers)->default_value(1), "loader: data.num_workers")(
      "batch", po::value(&batch)->default_value(256), "images per batch")(
      "seconds", po::value(&seconds)->default_value(8.0), "measured time")(
      "size", po::value(&size)->default_value(224), "loader: output size")(
      "split", po::value(&split)->default_value("train"), "loader: train | eval");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
    if (!torch::cuda::is_available()) {
      std::fprintf(stderr, "bench_gpu_decode: no GPU here\n");
      return 1;
    }
    if (mode == "ceiling") {
      ceiling(shards, batch, seconds);
    } else {
      loader(shards, folder, decode, workers, batch, seconds, size, split == "train");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_decode: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Decode + RandomResizedCrop + flip to 224 px throughput, in images per second on one core,
// from full-size (500x375, ImageNet-like) JPEGs made here: synthetic images upscaled to
// 500x375 and encoded at quality 90. Runs the streaming loader's per-sample path (scaled DCT
// decode chosen from the crop) and, for comparison, full-size decode. Prints one JSON line.
//   bench_data_decode [num_images=200] [rounds=3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "data/image.h"
#include "data/synthetic.h"
#include "data/transforms.h"

using namespace vit::data;

namespace {

double run(const std::vector<std::string>& jpegs, int rounds, bool scaled, std::vector<uint8_t>& out) {
  const std::vector<double> scale{0.08, 1.0}, ratio{0.75, 4.0 / 3.0};
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < jpegs.size(); ++i, ++done) {
      Rng rng(mix_key({static_cast<uint64_t>(r), i}));
      const JpegInfo info = jpeg_info(jpegs[i], "bench");
      const CropBox box = random_resized_crop_box(info.height, info.width, scale, ratio, rng);
      const int denom = scaled ? choose_scale_denom(box.height, box.width, 224, 224) : 1;
      const Image image = decode_jpeg(jpegs[i], "bench", denom);
      resample_into(image, denom == 1 ? box : scale_box(box, info.height, info.width, image), rng.coin(), 224, 224,
                    Interpolation::kBilinear, out.data());
    }
  }
  return static_cast<double>(done) / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 200;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 3;
  at::set_num_threads(1);
  SyntheticOptions o;
  o.num_samples = n;
  o.image_size = 64;
  const TensorSet set = make_synthetic(o);
  std::vector<std::string> jpegs;
  std::vector<uint8_t> planar(3 * 375 * 500);
  int64_t bytes = 0;
  for (int64_t i = 0; i < n; ++i) {
    Image small{64, 64, std::vector<uint8_t>(64 * 64 * 3)};
    auto img = set.images[i].permute({1, 2, 0}).contiguous();
    std::memcpy(small.pixels.data(), img.data_ptr<uint8_t>(), small.pixels.size());
    resample_into(small, {0, 0, 64, 64}, false, 375, 500, Interpolation::kBicubic, planar.data());
    Image big{375, 500, std::vector<uint8_t>(375 * 500 * 3)};
    for (int64_t p = 0; p < 375 * 500; ++p)
      for (int c = 0; c < 3; ++c) big.pixels[p * 3 + c] = planar[c * 375 * 500 + p];
    jpegs.push_back(encode_jpeg(big, 90));
    bytes += static_cast<int64_t>(jpegs.back().size());
  }
  std::vector<uint8_t> out(3 * 224 * 224);
  run(jpegs, 1, true, out);  // warm-up
  const double scaled = run(jpegs, rounds, true, out);
  const double full = run(jpegs, rounds, false, out);
  std::printf(
      "{\"bench\": \"data_decode_rrc\", \"source\": \"500x375 jpeg q90\", \"mean_jpeg_kb\": %.1f, \"output\": 224, "
      "\"img_per_s_per_core_scaled_dct\": %.1f, \"img_per_s_per_core_full_decode\": %.1f}\n",
      bytes / 1024.0 / n, scaled, full);
  return 0;
}

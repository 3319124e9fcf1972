// data.decode on a machine without a GPU decoder (CI): what is chosen and said, and the JPEG
// completeness test the GPU path uses to refuse truncated files as libjpeg-turbo does. The GPU
// side is tests/data/test_gpu_decode.cpp.
#include <gtest/gtest.h>

#include <fstream>

#include "core/errors.h"
#include "data/gpu_decode.h"
#include "data/image.h"
#include "data/loader.h"
#include "fixtures.h"

namespace vit::data {
namespace {

using testing::ScratchDir;

TEST(DecodeChoice, JpegCompleteFindsTheEndOfImage) {
  const std::string whole = encode_jpeg(testing::index_image(5, 48), 90);
  EXPECT_TRUE(jpeg_complete(whole));
  EXPECT_TRUE(jpeg_complete(whole + std::string(100, '\0')));  // trailing bytes after the end marker
  EXPECT_TRUE(jpeg_complete(encode_jpeg(testing::index_image(5, 48), 90, /*progressive=*/true)));
  for (size_t cut : {whole.size() - 1, whole.size() - 2, whole.size() / 2, size_t{300}}) {
    EXPECT_FALSE(jpeg_complete(whole.substr(0, cut))) << "cut at " << cut;
    EXPECT_THROW(decode_jpeg(whole.substr(0, cut), "cut.jpg"), DataError) << "cut at " << cut;
  }
  // A thumbnail (with its own end marker) before the main image's scan does not count.
  const std::string thumb = encode_jpeg(testing::index_image(1, 16), 90);
  const size_t length = thumb.size() + 2;  // an APP1 segment holding the thumbnail
  const std::string with_thumb = whole.substr(0, 2) + "\xFF\xE1" + static_cast<char>(length >> 8) +
                                 static_cast<char>(length & 0xFF) + thumb + whole.substr(2);
  EXPECT_EQ(decode_jpeg(with_thumb, "thumb.jpg").width, 48);
  EXPECT_TRUE(jpeg_complete(with_thumb));
  EXPECT_FALSE(jpeg_complete(with_thumb.substr(0, with_thumb.size() - 40)));
  EXPECT_FALSE(jpeg_complete("not a jpeg"));
}

struct Folder {
  ScratchDir dir;
  DataConfig config;
  Folder() {
    for (int64_t i = 0; i < 8; ++i) {
      const std::string cls = dir / ("train/c" + std::to_string(i % 2));
      std::filesystem::create_directories(cls);
      std::ofstream(cls + "/" + std::to_string(i) + ".jpg", std::ios::binary)
          << encode_jpeg(testing::index_image(i, 40 + 8 * i), 90);
    }
    config.dataset = "image_folder";
    config.path = config.eval_path = dir / "train";
    config.device_resident = false;
    config.num_classes = 2;
    config.num_workers = 1;
  }
};

LoaderOptions cpu_options() {
  LoaderOptions o;
  o.micro_batch_size = 4;
  o.image_height = o.image_width = 32;
  o.num_classes = 2;
  return o;
}

TEST(DecodeChoice, GpuAskedOnTheCpuIsAConfigErrorNamingTheKey) {
  Folder folder;
  folder.config.decode = "gpu";
  try {
    make_loader(folder.config, cpu_options());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("data.decode"), std::string::npos) << what;
    EXPECT_NE(what.find("the run is on the CPU"), std::string::npos) << what;
  }
}

TEST(DecodeChoice, AutoAndCpuDecodeOnTheCpuWithTheSameBatches) {
  Folder a, b;
  a.config.decode = "auto";
  b.config.decode = "cpu";
  b.config.path = b.config.eval_path = a.config.path;
  auto x = make_loader(a.config, cpu_options());
  auto y = make_loader(b.config, cpu_options());
  for (int step = 0; step < 3; ++step) {
    Batch p = x->next(), q = y->next();
    EXPECT_TRUE(torch::equal(p.images, q.images));
    EXPECT_TRUE(torch::equal(p.labels, q.labels));
  }
}

TEST(DecodeChoice, UnknownValueIsRefused) {
  DataConfig config;
  config.decode = "nvjpeg";
  try {
    validate(config);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.decode"), std::string::npos) << e.what();
  }
}

TEST(DecodeChoice, GpuDecoderOpenOnTheCpuSaysWhy) {
  std::string why;
  EXPECT_EQ(GpuDecoder::open(torch::kCPU, &why), nullptr);
  EXPECT_EQ(why, "the run is on the CPU");
}

}  // namespace
}  // namespace vit::data

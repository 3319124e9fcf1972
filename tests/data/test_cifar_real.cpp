// Integration: the CIFAR-10 JPEG copy (cmake -DVIT_CIFAR_ARCHIVE=FILE) reads as 50,000
// train / 10,000 test images, 5,000 / 1,000 per class, through ImageFolder, and through the
// binary reader after this test converts it to the cifar-10-batches-bin layout.
// Expectations come from the data set's README, not from the code under test.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "data/cifar.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/resident_loader.h"
#include "fixtures.h"

namespace vit::data {
namespace {

const std::vector<std::string> kClasses = {"airplane", "automobile", "bird",  "cat",  "deer",
                                           "dog",      "frog",       "horse", "ship", "truck"};

TEST(CifarJpeg, ImageFolderAndBinaryLayoutCounts) {
  if (!std::filesystem::exists(VIT_CIFAR_ARCHIVE)) GTEST_SKIP() << "no CIFAR-10 JPEG copy at " << VIT_CIFAR_ARCHIVE
                                                    << "; configure with -DVIT_CIFAR_ARCHIVE=FILE to run this test";
  testing::ScratchDir dir;
  const std::string cmd = "tar xzf " + std::string(VIT_CIFAR_ARCHIVE) + " -C " + dir.path();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::string root = dir.path();
  for (const auto& e : std::filesystem::directory_iterator(root))  // the archive may hold one top folder
    if (e.is_directory() && std::filesystem::exists(e.path() / "train")) root = e.path().string();

  ImageFolderSource train(root + "/train"), test(root + "/test");
  EXPECT_EQ(train.classes(), kClasses);
  ASSERT_EQ(train.size(), 50000);
  ASSERT_EQ(test.size(), 10000);
  std::vector<int64_t> per_class(10, 0);
  for (int64_t i = 0; i < train.size(); ++i) ++per_class[train.label(i)];
  for (int64_t c : per_class) EXPECT_EQ(c, 5000);

  // The loader over the folder (resident: decoded once), eval split: every test image once.
  DataConfig config;
  config.dataset = "image_folder";
  config.path = root;
  config.num_workers = 2;
  LoaderOptions o;
  o.micro_batch_size = 500;
  o.train = false;
  auto eval = make_loader(config, o);
  EXPECT_EQ(eval->num_samples(), 10000);
  EXPECT_EQ(eval->steps_per_epoch(), 20);
  std::vector<int64_t> eval_per_class(10, 0);
  for (int64_t s = 0; s < eval->steps_per_epoch(); ++s) {
    const Batch b = eval->next();
    EXPECT_EQ(b.mask.sum().item<double>(), 500);
    auto counts = torch::bincount(b.labels, {}, 10);
    for (int k = 0; k < 10; ++k) eval_per_class[k] += counts[k].item<int64_t>();
  }
  for (int64_t c : eval_per_class) EXPECT_EQ(c, 1000);

  // Convert to the binary layout: decode each JPEG to RGB, write label byte + planes.
  const std::string bin = dir / "cifar-10-batches-bin";
  std::filesystem::create_directories(bin);
  auto train_set = decode_all(train, 2, true);
  auto test_set = decode_all(test, 2, true);
  ASSERT_TRUE(train_set && test_set);
  for (int f = 0; f < 5; ++f) {
    TensorSet part{train_set->images.narrow(0, f * 10000, 10000), train_set->labels.narrow(0, f * 10000, 10000)};
    write_cifar10_file(bin + "/data_batch_" + std::to_string(f + 1) + ".bin", part);
  }
  write_cifar10_file(bin + "/test_batch.bin", *test_set);
  const TensorSet read_train = read_cifar(dir.path(), true, 10), read_test = read_cifar(bin, false, 10);
  EXPECT_EQ(read_train.size(), 50000);
  EXPECT_EQ(read_test.size(), 10000);
  EXPECT_TRUE(torch::equal(torch::bincount(read_train.labels), torch::full({10}, 5000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(torch::bincount(read_test.labels), torch::full({10}, 1000, torch::kInt64)));
  EXPECT_TRUE(torch::equal(read_train.images, train_set->images));

  config.dataset = "cifar10";
  config.path = dir.path();
  o.train = true;
  o.world_size = 2;
  o.micro_batch_size = 128;
  auto loader = make_loader(config, o);
  EXPECT_EQ(loader->num_samples(), 50000);
  EXPECT_EQ(loader->steps_per_epoch(), 50000 / 256);
}

}  // namespace
}  // namespace vit::data

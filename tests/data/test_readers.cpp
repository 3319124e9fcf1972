// Readers: CIFAR binary layout, ImageFolder, tar shards and the bad-input errors (one clear
// error naming the file), corrupt-JPEG policy.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/errors.h"
#include "core/files.h"
#include "data/cifar.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/tar.h"
#include "fixtures.h"

namespace vit::data {
namespace {
namespace fs = std::filesystem;
using testing::ScratchDir;

// Expects `fn` to throw DataError whose message contains `needle`.
template <typename Fn>
void expect_data_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected DataError mentioning " << needle;
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(Cifar, ReadsLabelByteThenRedGreenBluePlanes) {
  ScratchDir dir;
  const std::string root = dir / "cifar-10-batches-bin";
  // Record 0: label 7, red plane all 1, green 2, blue 3 except pixel (row 1, col 2) of blue = 200.
  std::string rec(1 + 3072, '\0');
  rec[0] = 7;
  for (int i = 0; i < 1024; ++i) {
    rec[1 + i] = 1;
    rec[1 + 1024 + i] = 2;
    rec[1 + 2048 + i] = 3;
  }
  rec[1 + 2048 + 1 * 32 + 2] = static_cast<char>(200);
  for (int f = 1; f <= 5; ++f) write_bytes(root + "/data_batch_" + std::to_string(f) + ".bin", rec + rec);
  write_bytes(root + "/test_batch.bin", rec);
  const TensorSet train = read_cifar(dir.path(), true, 10);  // the parent folder works too
  EXPECT_EQ(train.size(), 10);
  EXPECT_EQ(train.labels[3].item<int64_t>(), 7);
  EXPECT_EQ(train.images[0][0][5][5].item<int64_t>(), 1);
  EXPECT_EQ(train.images[0][1][5][5].item<int64_t>(), 2);
  EXPECT_EQ(train.images[0][2][1][2].item<int64_t>(), 200);
  EXPECT_EQ(read_cifar(root, false, 10).size(), 1);
}

TEST(Cifar, Cifar100CoarseAndFineLabels) {
  ScratchDir dir;
  std::string rec(2 + 3072, '\0');
  rec[0] = 4;   // coarse
  rec[1] = 42;  // fine
  write_bytes(dir / "cifar-100-binary/train.bin", rec);
  EXPECT_EQ(read_cifar(dir.path(), true, 100, true).labels[0].item<int64_t>(), 42);
  EXPECT_EQ(read_cifar(dir.path(), true, 100, false).labels[0].item<int64_t>(), 4);
}

TEST(Cifar, BadInputsNameTheFile) {
  ScratchDir dir;
  expect_data_error([&] { read_cifar(dir / "nowhere", true, 10); }, "nowhere");
  const std::string root = dir / "cifar-10-batches-bin";
  write_bytes(root + "/test_batch.bin", std::string(3073 * 2 + 100, '\0'));  // truncated record
  expect_data_error([&] { read_cifar(root, false, 10); }, "test_batch.bin");
  write_bytes(root + "/test_batch.bin", std::string(3074 * 3073, '\0'));  // a CIFAR-100-sized file
  write_bytes(root + "/data_batch_1.bin", std::string(3073, '\0'));
  expect_data_error([&] { read_cifar(root, true, 10); }, "data_batch_2.bin");  // missing
}

TEST(ImageFolder, SortedClassesAndErrors) {
  ScratchDir dir;
  const std::string jpg = encode_jpeg(testing::index_image(1, 8));
  write_bytes(dir / "root/b_cat/2.jpg", jpg);
  write_bytes(dir / "root/b_cat/1.JPEG", jpg);
  write_bytes(dir / "root/a_dog/x.jpeg", jpg);
  write_bytes(dir / "root/a_dog/notes.txt", "ignored");
  ImageFolderSource src(dir / "root");
  EXPECT_EQ(src.size(), 3);
  EXPECT_EQ(src.classes(), (std::vector<std::string>{"a_dog", "b_cat"}));
  EXPECT_EQ(src.label(0), 0);
  EXPECT_EQ(src.label(2), 1);
  fs::create_directories(dir / "root/c_empty");
  expect_data_error([&] { ImageFolderSource bad(dir / "root"); }, "c_empty");
  expect_data_error([&] { ImageFolderSource bad(dir / "missing"); }, "missing");
}

TEST(Tar, WriterAndListerAgreeAndBadShardsAreNamed) {
  ScratchDir dir;
  TarWriter w(dir / "a.tar");
  w.add("000001.jpg", std::string(700, 'x'));
  w.add("000001.cls", "3\n");
  w.close();
  const auto members = list_tar(dir / "a.tar");
  ASSERT_EQ(members.size(), 2u);
  EXPECT_EQ(members[0].name, "000001.jpg");
  EXPECT_EQ(members[0].offset, 512);
  EXPECT_EQ(members[0].size, 700);
  EXPECT_EQ(members[1].offset, 512 + 1024 + 512);
  EXPECT_EQ(read_file_range(dir / "a.tar", members[1].offset, members[1].size), "3\n");
  write_bytes(dir / "text.tar", std::string(2048, 'a'));
  expect_data_error([&] { list_tar(dir / "text.tar"); }, "text.tar: is not a tar");
  const std::string whole = read_file(dir / "a.tar");
  write_bytes(dir / "cut.tar", whole.substr(0, 900));
  expect_data_error([&] { list_tar(dir / "cut.tar"); }, "cut.tar: truncated inside a member");
  expect_data_error([&] { TarShardSource s(dir / "none.tar", 1); }, "none.tar");
}

// A shard that ends anywhere but after its end-of-archive blocks is damaged: refused by default,
// or (data.on_corrupt: skip) its whole samples kept and the loss reported.
TEST(Tar, ShardsCutShortAreReportedWithWhatIsLost) {
  ScratchDir dir;
  TarWriter w(dir / "b.tar");
  for (int i = 0; i < 3; ++i) {
    w.add("00000" + std::to_string(i) + ".jpg", std::string(100, 'x'));  // header + 1 data block each
    w.add("00000" + std::to_string(i) + ".cls", "1\n");
  }
  w.close();
  const std::string whole = read_file(dir / "b.tar");
  ASSERT_EQ(whole.size(), 6u * 1024 + 1024);
  // Cut 300 bytes into the header of the second sample's .cls (member 4, at offset 3 * 1024).
  write_bytes(dir / "header.tar", whole.substr(0, 3 * 1024 + 300));
  expect_data_error([&] { list_tar(dir / "header.tar"); }, "truncated inside a 512-byte header");
  std::string damage;
  EXPECT_EQ(list_tar(dir / "header.tar", &damage).size(), 3u);
  EXPECT_NE(damage.find("3 whole member(s) before offset 3072"), std::string::npos) << damage;
  // Cut at a member boundary: no end-of-archive blocks.
  write_bytes(dir / "boundary.tar", whole.substr(0, 4 * 1024));
  damage.clear();
  EXPECT_EQ(list_tar(dir / "boundary.tar", &damage).size(), 4u);
  EXPECT_NE(damage.find("no end-of-archive blocks"), std::string::npos) << damage;
  expect_data_error([&] { TarShardSource s(dir / "header.tar", 1); }, "header.tar: truncated inside a 512-byte header");
  TarShardSource kept(dir / "header.tar", 1, /*skip_damaged=*/true);
  EXPECT_EQ(kept.size(), 1);  // sample 0 whole; sample 1 lost its label with the cut
  TarShardSource intact(dir / "b.tar", 1, true);
  EXPECT_EQ(intact.size(), 3);
}

TEST(Shards, BracePatternAndListFile) {
  EXPECT_EQ(expand_shard_spec("d/{008..010}.tar"), (std::vector<std::string>{"d/008.tar", "d/009.tar", "d/010.tar"}));
  ScratchDir dir;
  write_bytes(dir / "list.txt", "# shards\na.tar\n\n/abs/b.tar\n");
  EXPECT_EQ(expand_shard_spec(dir / "list.txt"), (std::vector<std::string>{dir / "a.tar", "/abs/b.tar"}));
}

// An ImageFolder of 12 JPEGs where one is corrupt, streamed (device_resident off).
struct CorruptFolder {
  ScratchDir dir;
  DataConfig config;
  CorruptFolder() {
    for (int i = 0; i < 12; ++i) {
      const std::string jpg = encode_jpeg(testing::index_image(i, 16), 95);
      const std::string name = dir / ("root/c" + std::to_string(i % 2) + "/" + std::to_string(100 + i) + ".jpg");
      write_bytes(name, i == 5 ? jpg.substr(0, jpg.size() / 3) : jpg);
    }
    config.dataset = "image_folder";
    config.path = dir / "root";
    config.eval_path = dir / "root";
    config.device_resident = false;
    config.num_workers = 2;
  }
};

TEST(CorruptJpeg, SkipCountsAndMasksInEval) {
  CorruptFolder f;
  LoaderOptions o;
  o.micro_batch_size = 4;
  o.image_height = o.image_width = 16;
  o.train = false;
  auto loader = make_loader(f.config, o);
  double masked = 0;
  for (int64_t s = 0; s < loader->steps_per_epoch(); ++s) masked += loader->next().mask.sum().item<double>();
  EXPECT_EQ(masked, 11);  // 12 files, 1 corrupt
  o.train = true;
  auto train = make_loader(f.config, o);
  for (int64_t s = 0; s < 2 * train->steps_per_epoch(); ++s) EXPECT_EQ(train->next().images.size(0), 4);
}

TEST(CorruptJpeg, FailPolicyRaisesNamingTheFile) {
  CorruptFolder f;
  f.config.on_corrupt = "fail";
  LoaderOptions o;
  o.micro_batch_size = 12;
  o.image_height = o.image_width = 16;
  o.train = false;
  auto loader = make_loader(f.config, o);
  expect_data_error([&] { loader->next(); }, "105.jpg");
  f.config.device_resident = true;  // the one-time decode applies the same policy
  expect_data_error([&] { make_loader(f.config, o); }, "105.jpg");
  f.config.on_corrupt = "skip";
  EXPECT_EQ(make_loader(f.config, o)->num_samples(), 11);
}

}  // namespace
}  // namespace vit::data

// Shards written by Python's tarfile (not by our writer) read correctly: the venv python writes
// two shards of PIL JPEGs whose pixels encode their index, with .cls labels, in the pax format
// Python uses by default; the loader must return every sample once with its label.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/loader.h"
#include "fixtures.h"

namespace vit::data {
namespace {

TEST(PythonTar, ShardsFromTarfileReadCorrectly) {
  ASSERT_TRUE(std::filesystem::exists(VIT_TEST_PYTHON)) << "no python at " << VIT_TEST_PYTHON << " (launch/setup.sh installs it)";
  testing::ScratchDir dir;
  const std::string script = dir / "write.py";
  std::ofstream(script) << R"(import io, sys, tarfile
from PIL import Image
out = sys.argv[1]
i = 0
for shard, count in enumerate([13, 8]):
    with tarfile.open(f"{out}/shard-{shard:02d}.tar", "w") as tar:
        for _ in range(count):
            colour = (16 * (i % 16) + 8, 16 * ((i // 16) % 16) + 8, 16 * (i // 256) + 8)
            buf = io.BytesIO()
            Image.new("RGB", (20, 20), colour).save(buf, format="JPEG", quality=95)
            for ext, data in (("jpg", buf.getvalue()), ("cls", str(i % 5).encode())):
                info = tarfile.TarInfo(f"sample_{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            i += 1
)";
  const std::string cmd = std::string(VIT_TEST_PYTHON) + " " + script + " " + dir.path();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "python (tarfile + PIL) could not write the shards";
  DataConfig config = testing::tar_config(dir / "shard-{00..01}.tar", dir / "shard-{00..01}.tar", 5);
  config.num_workers = 2;
  LoaderOptions o;
  o.micro_batch_size = 5;
  o.num_classes = 5;
  o.train = false;
  auto loader = make_loader(config, o);
  EXPECT_EQ(loader->num_samples(), 21);
  std::set<int64_t> seen;
  for (int64_t s = 0; s < loader->steps_per_epoch(); ++s) {
    const Batch b = loader->next();
    const auto ids = testing::decode_indices(b, config);
    for (int64_t j = 0; j < 5; ++j) {
      if (b.mask[j].item<float>() == 0) continue;
      EXPECT_TRUE(seen.insert(ids[j]).second);
      EXPECT_EQ(b.labels[j].item<int64_t>(), ids[j] % 5);
    }
  }
  EXPECT_EQ(seen.size(), 21u);
  EXPECT_EQ(*seen.rbegin(), 20);
}

}  // namespace
}  // namespace vit::data

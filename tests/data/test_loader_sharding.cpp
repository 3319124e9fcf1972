// The loader's sharding semantics, end to end through make_loader, on sets whose pixels encode
// their index: for world sizes 1, 2, 3 and 1 / 4 loader threads, no sample twice in an epoch,
// equal step counts, eval covers every sample exactly once, the order changes between epochs
// and repeats for the same seed, and resume mid-epoch yields exactly the remaining batches.
// Three layouts: CIFAR binary (resident loader), ImageFolder JPEGs and tar shards (streaming); tar
// shards also under a plan of another number of ranks (a run resumed elsewhere).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "data/cifar.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "data/tar.h"
#include "fixtures.h"

namespace vit::data {
namespace {
namespace fs = std::filesystem;
using testing::ScratchDir;

constexpr int64_t kTrain = 103, kEval = 37, kBatch = 4;

struct Layout {
  std::string name;
  DataConfig config;
  int64_t train_size = kTrain, eval_size = kEval;
  std::vector<int64_t> shard_sizes;  // tar only: samples per shard, in order
};

void write_index_cifar(const std::string& root) {
  fs::create_directories(root);
  auto set = [](int64_t begin, int64_t end) {
    TensorSet s{torch::empty({end - begin, 3, 32, 32}, torch::kUInt8), torch::empty({end - begin}, torch::kInt64)};
    for (int64_t i = begin; i < end; ++i) {
      const auto c = testing::index_colour(i);
      for (int k = 0; k < 3; ++k) s.images[i - begin][k].fill_(c[k]);
      s.labels[i - begin] = i % 10;
    }
    return s;
  };
  const int64_t bounds[6] = {0, 20, 40, 60, 80, kTrain};
  for (int f = 0; f < 5; ++f)
    write_cifar10_file(root + "/data_batch_" + std::to_string(f + 1) + ".bin", set(bounds[f], bounds[f + 1]));
  write_cifar10_file(root + "/test_batch.bin", set(0, kEval));
}

void write_index_folder(const std::string& root, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const fs::path file = fs::path(root) / ("class" + std::to_string(i % 3)) / (std::to_string(1000 + i) + ".jpg");
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << encode_jpeg(testing::index_image(i, 24), 95);
  }
}

// Shards of the given sizes; samples numbered consecutively across shards.
void write_index_shards(const std::string& dir, const std::vector<int64_t>& sizes) {
  fs::create_directories(dir);
  int64_t i = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    TarWriter w(dir + "/" + std::to_string(s) + ".tar");
    for (int64_t k = 0; k < sizes[s]; ++k, ++i) {
      const std::string key = "s" + std::to_string(i);
      w.add(key + ".jpg", encode_jpeg(testing::index_image(i, 24), 95));
      w.add(key + ".cls", std::to_string(i % 3));
    }
    w.close();
  }
}

class LoaderSharding : public ::testing::TestWithParam<std::tuple<std::string, int, int>> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    write_index_cifar(*dir_ / "cifar");
    write_index_folder(*dir_ / "folder/train", kTrain);
    write_index_folder(*dir_ / "folder/val", kEval);
    write_index_shards(*dir_ / "shards/train", {15, 12, 9, 20, 11, 8, 14, 14});  // 103
    write_index_shards(*dir_ / "shards/eval", {10, 9, 8, 10});                  // 37
  }
  static void TearDownTestSuite() { delete dir_; }

  Layout layout() const {
    Layout l;
    l.name = std::get<0>(GetParam());
    if (l.name == "cifar") {
      l.config.dataset = "cifar10";
      l.config.path = *dir_ / "cifar";
    } else if (l.name == "folder") {
      l.config.dataset = "image_folder";
      l.config.path = *dir_ / "folder";
      l.config.device_resident = false;
      l.config.num_classes = 3;
    } else {
      l.config = testing::tar_config(*dir_ / "shards/train/{0..7}.tar", *dir_ / "shards/eval/{0..3}.tar", 3);
      l.config.shuffle_buffer = 8;
      l.shard_sizes = {15, 12, 9, 20, 11, 8, 14, 14};
    }
    l.config.num_workers = std::get<2>(GetParam());
    l.config.prefetch_batches = 3;
    return l;
  }

  LoaderOptions options(int rank, int world, bool train, uint64_t seed = 11) const {
    LoaderOptions o;
    o.rank = rank;
    o.world_size = world;
    o.micro_batch_size = kBatch;
    o.seed = seed;
    o.train = train;
    o.num_classes = 10;
    return o;
  }

  // Indices (mask 1) each rank sees in one epoch, batch by batch.
  std::vector<std::vector<int64_t>> epoch_indices(const Layout& l, int world, bool train, int64_t epoch,
                                                  int64_t* steps) const {
    std::vector<std::vector<int64_t>> per_rank(world);
    *steps = -1;
    for (int r = 0; r < world; ++r) {
      auto loader = make_loader(l.config, options(r, world, train));
      if (*steps >= 0) {
        EXPECT_EQ(loader->steps_per_epoch(), *steps) << "ranks disagree on steps";
      }
      *steps = loader->steps_per_epoch();
      loader->seek({epoch, 0});
      for (int64_t s = 0; s < *steps; ++s) {
        const Batch b = loader->next();
        EXPECT_EQ(b.images.size(0), kBatch);
        const auto ids = testing::decode_indices(b, l.config);
        for (int64_t j = 0; j < kBatch; ++j) {
          if (b.mask[j].item<float>() == 0) continue;
          per_rank[r].push_back(ids[j]);
          const int64_t k = l.name == "cifar" ? 10 : 3;
          EXPECT_EQ(b.labels[j].item<int64_t>(), ids[j] % k) << "label of sample " << ids[j];
        }
      }
    }
    return per_rank;
  }

  static ScratchDir* dir_;
};
ScratchDir* LoaderSharding::dir_ = nullptr;

// Rank r's samples in the tar layout: those of shards s with s % world == r.
std::set<int64_t> own_shard_samples(const std::vector<int64_t>& sizes, int world, int rank) {
  std::set<int64_t> out;
  int64_t first = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    if (static_cast<int>(s % world) == rank)
      for (int64_t i = first; i < first + sizes[s]; ++i) out.insert(i);
    first += sizes[s];
  }
  return out;
}

TEST_P(LoaderSharding, TrainEpochIsDisjointEqualAndReshuffled) {
  const Layout l = layout();
  const int world = std::get<1>(GetParam());
  int64_t steps = 0;
  const auto e0 = epoch_indices(l, world, true, 0, &steps);
  int64_t expected_steps = kTrain / (world * kBatch);
  if (!l.shard_sizes.empty()) {
    int64_t min_count = INT64_MAX;
    for (int r = 0; r < world; ++r)
      min_count = std::min<int64_t>(min_count, own_shard_samples(l.shard_sizes, world, r).size());
    expected_steps = min_count / kBatch;
  }
  EXPECT_EQ(steps, expected_steps);
  std::set<int64_t> seen;
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(static_cast<int64_t>(e0[r].size()), steps * kBatch);
    for (int64_t i : e0[r]) {
      EXPECT_TRUE(seen.insert(i).second) << "sample " << i << " twice in an epoch";
      EXPECT_GE(i, 0);
      EXPECT_LT(i, kTrain);
      if (!l.shard_sizes.empty()) {
        EXPECT_TRUE(own_shard_samples(l.shard_sizes, world, r).count(i)) << i;
      }
    }
  }
  int64_t steps1 = 0;
  const auto e1 = epoch_indices(l, world, true, 1, &steps1);
  EXPECT_EQ(steps1, steps);
  EXPECT_NE(e0, e1) << "the order must change between epochs";
}

TEST_P(LoaderSharding, EvalCoversEverySampleExactlyOnce) {
  const Layout l = layout();
  const int world = std::get<1>(GetParam());
  int64_t steps = 0;
  const auto per_rank = epoch_indices(l, world, false, 0, &steps);
  std::multiset<int64_t> all;
  for (const auto& r : per_rank) all.insert(r.begin(), r.end());
  EXPECT_EQ(static_cast<int64_t>(all.size()), kEval);
  for (int64_t i = 0; i < kEval; ++i) EXPECT_EQ(all.count(i), 1u) << "eval sample " << i;
  if (l.shard_sizes.empty()) {
    EXPECT_EQ(steps, (kEval + world * kBatch - 1) / (world * kBatch));
  }
}

TEST_P(LoaderSharding, SameSeedIsBitIdenticalAndResumeIsExact) {
  const Layout l = layout();
  const int world = std::get<1>(GetParam());
  const int rank = world - 1;
  auto a = make_loader(l.config, options(rank, world, true));
  auto b = make_loader(l.config, options(rank, world, true));
  const int64_t steps = a->steps_per_epoch();
  // Run a across the epoch boundary; b resumes in the middle of epoch 1 from a's position.
  std::vector<Batch> reference;
  a->seek({1, 0});
  for (int64_t s = 0; s < steps + 1; ++s) reference.push_back(a->next());
  const LoaderPosition after = a->position();
  EXPECT_EQ(after.epoch, 2);
  EXPECT_EQ(after.step, 1);
  const int64_t mid = steps / 2;
  b->next();  // some unrelated progress first, then resume
  b->seek(LoaderPosition::from_json(LoaderPosition{1, mid}.to_json()));
  for (int64_t s = mid; s < steps + 1; ++s) {
    const Batch got = b->next();
    EXPECT_TRUE(torch::equal(got.images, reference[s].images)) << "step " << s;
    EXPECT_TRUE(torch::equal(got.labels, reference[s].labels)) << "step " << s;
  }
  auto c = make_loader(l.config, options(rank, world, true, /*seed=*/12));
  c->seek({1, 0});
  bool differs = false;
  for (int64_t s = 0; s < steps; ++s) differs |= !torch::equal(c->next().labels, reference[s].labels);
  EXPECT_TRUE(differs) << "another seed should give another order";
}

// Tar shards resumed on another number of ranks keep the order of the P ranks the run started on
// (Note [Tar shard sharding]): with a global batch of 6 micro-batches, jobs of 1, 2, 3 and 6 ranks
// following the plan of 2 see, at every global position of two epochs, the sample the 2-rank job
// sees there, each sample at most once an epoch.
TEST(TarShardPlan, AnyNumberOfRanksFollowsThePlanRanksOrder) {
  ScratchDir dir;
  write_index_shards(dir / "train", {15, 12, 9, 20, 11, 8, 14, 14});
  DataConfig config = testing::tar_config(dir / "train/{0..7}.tar", dir / "train/{0..7}.tar", 3);
  config.shuffle_buffer = 8;
  config.num_workers = 1;
  constexpr int64_t kMicroBatches = 6;  // per optimiser step, over all ranks
  auto positions = [&](int world) {     // global position -> sample, for epochs 0 and 1
    std::map<std::pair<int64_t, int64_t>, int64_t> out;
    for (int r = 0; r < world; ++r) {
      LoaderOptions o;
      o.rank = r;
      o.world_size = world;
      o.micro_batch_size = kBatch;
      o.seed = 5;
      o.num_classes = 3;
      o.micro_batches_per_step = kMicroBatches / world;
      o.plan_world_size = 2;
      auto loader = make_loader(config, o);
      EXPECT_EQ(loader->steps_per_epoch() / o.micro_batches_per_step, 4) << world << " ranks";  // 49 / (4 x 3)
      for (int64_t epoch = 0; epoch < 2; ++epoch) {
        loader->seek({epoch, 0});
        for (int64_t step = 0; step < loader->steps_per_epoch(); ++step) {
          const auto ids = testing::decode_indices(loader->next(), config);
          const int64_t first = first_position(step, r, world, kBatch);
          for (int64_t j = 0; j < kBatch; ++j) out[{epoch, first + j}] = ids[static_cast<size_t>(j)];
        }
      }
    }
    return out;
  };
  const auto plan = positions(2);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    for (const auto& [at, id] : plan) {
      if (at.first == epoch) {
        EXPECT_TRUE(seen.insert(id).second) << "sample " << id << " twice in epoch " << epoch;
      }
    }
    EXPECT_EQ(seen.size(), 4u * kMicroBatches * kBatch);
  }
  for (int world : {1, 3, 6}) EXPECT_EQ(positions(world), plan) << world << " ranks";
}

std::string name(const ::testing::TestParamInfo<LoaderSharding::ParamType>& info) {
  return std::get<0>(info.param) + "_world" + std::to_string(std::get<1>(info.param)) + "_threads" +
         std::to_string(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Resident, LoaderSharding,
                         ::testing::Combine(::testing::Values("cifar"), ::testing::Values(1, 2, 3),
                                            ::testing::Values(1)),
                         name);
INSTANTIATE_TEST_SUITE_P(Streaming, LoaderSharding,
                         ::testing::Combine(::testing::Values("folder", "tar"), ::testing::Values(1, 2, 3),
                                            ::testing::Values(1, 4)),
                         name);

}  // namespace
}  // namespace vit::data

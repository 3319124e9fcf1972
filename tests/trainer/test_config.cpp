// Config loading: every shipped config parses, and user mistakes give one clear message that
// names the file (and line) and the key, with the nearest valid key for typos.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/errors.h"
#include "trainer/config.h"

namespace fs = std::filesystem;
using vit::ConfigError;
using vit::train::load_config;

namespace {

const std::string kSourceDir = VIT_SOURCE_DIR;

// Writes `text` to a fresh file under the test's temporary folder and returns its path.
std::string write_yaml(const std::string& name, const std::string& text) {
  fs::path dir = fs::temp_directory_path() / "vitrain_config_test";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p) << text;
  return p.string();
}

// The message of the ConfigError thrown by `fn`, or "" when none was thrown.
template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, EveryShippedConfigParsesAndValidates) {
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kSourceDir + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    auto config = load_config(entry.path().string());
    EXPECT_FALSE(config.run.dir.empty());
    ++count;
  }
  EXPECT_GE(count, 6);
}

TEST(Config, TypoNamesKeyFileAndSuggestion) {
  std::string path = write_yaml("typo.yaml", "model:\n  width: 64\n  dept: 4\n");
  std::string msg = error_of([&] { load_config(path); });
  EXPECT_NE(msg.find("model.dept"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean model.depth?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("typo.yaml:3"), std::string::npos) << msg;
}

TEST(Config, TypoInSetOverrideNamesTheFlag) {
  std::string msg = error_of([&] { load_config(kSourceDir + "/configs/quickstart.yaml", {"model.dept=4"}); });
  EXPECT_NE(msg.find("--set"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean model.depth?"), std::string::npos) << msg;
}

TEST(Config, UnknownSectionSuggestsNearest) {
  std::string path = write_yaml("section.yaml", "modle:\n  width: 64\n");
  std::string msg = error_of([&] { load_config(path); });
  EXPECT_NE(msg.find("unknown section 'modle'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model'"), std::string::npos) << msg;
}

TEST(Config, MistakesInABaseFileNameThatFile) {
  std::string base = write_yaml("base_typo.yaml", "run:\n  seed: 1\nmodle:\n  depth: 2\n");
  std::string child = write_yaml("child_of_typo.yaml", "base: base_typo.yaml\nmodel:\n  depth: 3\n");
  std::string msg = error_of([&] { load_config(child); });
  EXPECT_NE(msg.find("base_typo.yaml:3: unknown section 'modle'"), std::string::npos) << msg;
  std::string clean = write_yaml("clean_for_set.yaml", "model:\n  depth: 3\n");
  msg = error_of([&] { load_config(clean, {"traim.steps=3"}); });  // a section only --set names
  EXPECT_NE(msg.find("--set: unknown section 'traim'"), std::string::npos) << msg;
}

TEST(Config, MalformedYamlNamesFileAndLine) {
  std::string path = write_yaml("broken.yaml", "model:\n  width: 64\n  depth: [1, 2\ntrain:\n  steps: 3\n");
  std::string msg = error_of([&] { load_config(path); });
  EXPECT_NE(msg.find("broken.yaml:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("malformed YAML"), std::string::npos) << msg;
}

TEST(Config, EmptyFileIsAnErrorNamingIt) {
  // Empty, comment-only, a bare document marker, a YAML null: each would train with every default.
  int i = 0;
  for (const char* text : {"", "# only a comment\n", "---\n", "~\n"}) {
    std::string path = write_yaml("empty" + std::to_string(i++) + ".yaml", text);
    std::string msg = error_of([&] { load_config(path); });
    EXPECT_NE(msg.find(path + ": the file is empty"), std::string::npos) << msg;
  }
  std::string base = write_yaml("empty_base.yaml", "# nothing\n");
  std::string child = write_yaml("child_of_empty.yaml", "base: empty_base.yaml\nmodel:\n  depth: 2\n");
  std::string msg = error_of([&] { load_config(child); });
  EXPECT_NE(msg.find("empty_base.yaml: the file is empty"), std::string::npos) << msg;
}

TEST(Config, WrongTypeNamesKeyAndExpectedType) {
  std::string path = write_yaml("type.yaml", "model:\n  depth: four\n");
  std::string msg = error_of([&] { load_config(path); });
  EXPECT_NE(msg.find("model.depth must be an integer, got 'four'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("type.yaml:2"), std::string::npos) << msg;
}

TEST(Config, MissingFileSaysSo) {
  std::string msg = error_of([&] { load_config("/nonexistent/x.yaml"); });
  EXPECT_NE(msg.find("/nonexistent/x.yaml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(Config, CrossFieldChecks) {
  auto base = kSourceDir + "/configs/quickstart.yaml";
  std::string msg = error_of([&] { load_config(base, {"model.image_size=18"}); });
  EXPECT_NE(msg.find("not divisible by model.patch_size"), std::string::npos) << msg;
  msg = error_of([&] { load_config(base, {"model.num_heads=5"}); });
  EXPECT_NE(msg.find("model.width: 64 is not divisible by model.num_heads 5"), std::string::npos) << msg;
  msg = error_of([&] { load_config(base, {"train.global_batch_size=200"}); });
  EXPECT_NE(msg.find("train.global_batch_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not divisible"), std::string::npos) << msg;
  msg = error_of([&] { load_config(base, {"model.dropout=1.5"}); });
  EXPECT_NE(msg.find("model.dropout"), std::string::npos) << msg;
  msg = error_of([&] { vit::train::validate_for_world(load_config(base, {"train.attention=flsh"}), 1); });
  EXPECT_NE(msg.find("train.attention: must be auto, flash, efficient, cudnn or math, got 'flsh'"), std::string::npos)
      << msg;
  msg = error_of([&] { vit::train::validate_for_world(load_config(base, {"model.head_init=zeros"}), 1); });
  EXPECT_NE(msg.find("model.head_init: must be auto, zero or trunc_normal, got 'zeros'"), std::string::npos) << msg;
  // The global batch must divide by world size x micro batch: 384 = 3 x 128 fits 3 ranks, not 2.
  auto config = load_config(base, {"train.global_batch_size=384"});
  EXPECT_NO_THROW(vit::train::validate_for_world(config, 3));
  EXPECT_EQ(vit::train::accumulation_steps(config, 3), 1);
  EXPECT_EQ(vit::train::accumulation_steps(config, 1), 3);
  msg = error_of([&] { vit::train::validate_for_world(config, 2); });
  EXPECT_NE(msg.find("world size 2"), std::string::npos) << msg;
}

// Each section's struct checks itself, without the rest of the config; the whole-config check
// reports the same messages, and the checks across sections stay in validate_for_world.
TEST(Config, EachSectionValidatesItself) {
  vit::train::OptimConfig optim;
  optim.name = "rmsprop";
  EXPECT_NE(error_of([&] { vit::train::validate(optim); }).find("optim.name: must be adamw or muon or sgd, got 'rmsprop'"),
            std::string::npos);
  vit::train::ScheduleConfig schedule;
  schedule.warmup_fraction = 1.5;
  EXPECT_NE(error_of([&] { vit::train::validate(schedule); }).find("schedule.warmup_fraction"), std::string::npos);
  vit::train::CheckpointConfig checkpoint;
  checkpoint.keep = 0;
  EXPECT_NE(error_of([&] { vit::train::validate(checkpoint); }).find("checkpoint.keep: must be >= 1"),
            std::string::npos);
  vit::train::LoggingConfig logging;
  logging.progress = "fancy";
  EXPECT_NE(error_of([&] { vit::train::validate(logging); }).find("logging.progress"), std::string::npos);
  vit::train::TrainConfig train;
  train.micro_batch_size = 0;
  EXPECT_NE(error_of([&] { vit::train::validate(train); }).find("train.micro_batch_size: must be positive, got 0"),
            std::string::npos);
  vit::train::RunConfig run;
  run.device = "tpu";
  EXPECT_NE(error_of([&] { vit::train::validate(run); }).find("run.device"), std::string::npos);
  EXPECT_NO_THROW(vit::train::validate(vit::train::OptimConfig{}));
  EXPECT_NO_THROW(vit::train::validate(vit::train::TrainConfig{}));
  // Across sections: the floor of the schedule against the optimiser's peak.
  const auto base = kSourceDir + "/configs/quickstart.yaml";
  const auto msg = error_of([&] { load_config(base, {"schedule.min_lr=1.0", "optim.lr=0.001"}); });
  EXPECT_NE(msg.find("schedule.min_lr: must be in [0, optim.lr]"), std::string::npos) << msg;
}

TEST(Config, BaseInheritanceAndOverrides) {
  write_yaml("parent.yaml", "run:\n  seed: 7\nmodel:\n  width: 96\n  depth: 3\n  num_heads: 3\n  mlp_dim: 192\n");
  std::string child = write_yaml("child.yaml", "base: parent.yaml\nmodel:\n  depth: 5\n");
  auto c = load_config(child, {"run.seed=11", "data.mean=[0.1, 0.2, 0.3]"});
  EXPECT_EQ(c.model.width, 96);  // inherited
  EXPECT_EQ(c.model.depth, 5);   // child wins
  EXPECT_EQ(c.run.seed, 11u);    // --set wins
  EXPECT_EQ(c.data.mean, (std::vector<double>{0.1, 0.2, 0.3}));
}

TEST(Config, BaseLoopIsRefused) {
  write_yaml("loop_a.yaml", "base: loop_b.yaml\n");
  std::string b = write_yaml("loop_b.yaml", "base: loop_a.yaml\n");
  EXPECT_NE(error_of([&] { load_config(b); }).find("loops"), std::string::npos);
}

TEST(Config, PresetFillsShapeAndExplicitKeysWin) {
  std::string path = write_yaml("preset.yaml",
                                "model:\n  preset: vit_base_patch16_224\n  depth: 2\n  num_classes: 1000\n"
                                "data:\n  num_classes: 1000\n");
  auto c = load_config(path);
  EXPECT_EQ(c.model.width, 768);
  EXPECT_EQ(c.model.patch_size, 16);
  EXPECT_EQ(c.model.image_size, 224);
  EXPECT_EQ(c.model.mlp_dim, 3072);
  EXPECT_EQ(c.model.depth, 2);
  std::string bad = write_yaml("bad_preset.yaml", "model:\n  preset: vit_base_patch16_244\n");
  std::string msg = error_of([&] { load_config(bad); });
  EXPECT_NE(msg.find("vit_base_patch16_224"), std::string::npos) << msg;
}

TEST(Config, ResolvedYamlRoundTrips) {
  auto c = load_config(kSourceDir + "/configs/cifar10/finetune.yaml");
  std::string yaml = vit::train::to_yaml(c);
  std::string path = write_yaml("resolved.yaml", yaml);
  auto again = load_config(path);
  EXPECT_EQ(vit::train::to_yaml(again), yaml);
  EXPECT_EQ(again.model.image_size, 48);
  EXPECT_EQ(again.model.head, "linear");
  EXPECT_EQ(again.optim.name, "sgd");
}

TEST(Config, DocsListEveryKey) {
  std::ifstream in(kSourceDir + "/docs/config.md");
  std::string docs((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& key : vit::train::valid_keys()) {
    EXPECT_NE(docs.find("`" + key + "`"), std::string::npos) << key << " is missing from docs/config.md";
  }
}

// first_config_difference: the key path and both values of the first differing YAML key.
#include <gtest/gtest.h>

#include "distributed/consistency.h"

namespace vit::dist {
namespace {

const char* kBase =
    "model:\n"
    "  depth: 6\n"
    "  width: 192\n"
    "data:\n"
    "  mean:\n"
    "  - 0.49\n"
    "  - 0.48\n"
    "  dataset: cifar10\n"
    "optim:\n"
    "  groups:\n"
    "    - name: decay\n"
    "      lr: 0.1\n"
    "    - name: no_decay\n"
    "      lr: 0.2\n";

std::string replace(std::string text, const std::string& from, const std::string& to) {
  return text.replace(text.find(from), from.size(), to);
}

TEST(ConfigDifference, EqualTextsHaveNone) {
  EXPECT_EQ(first_config_difference(kBase, kBase).key, "");
}

TEST(ConfigDifference, NamesNestedKey) {
  const auto d = first_config_difference(kBase, replace(kBase, "depth: 6", "depth: 4"));
  EXPECT_EQ(d.key, "model.depth");
  EXPECT_EQ(d.value_a, "6");
  EXPECT_EQ(d.value_b, "4");
}

TEST(ConfigDifference, NamesSequenceElements) {
  auto d = first_config_difference(kBase, replace(kBase, "- 0.48", "- 0.5"));
  EXPECT_EQ(d.key, "data.mean[1]");
  EXPECT_EQ(d.value_a, "0.48");
  d = first_config_difference(kBase, replace(kBase, "lr: 0.2", "lr: 0.3"));
  EXPECT_EQ(d.key, "optim.groups[1].lr");
  EXPECT_EQ(d.value_b, "0.3");
  d = first_config_difference(kBase, replace(kBase, "dataset: cifar10", "dataset: synthetic"));
  EXPECT_EQ(d.key, "data.dataset");  // the sequence above did not swallow the next key
}

TEST(ConfigDifference, MissingKeysOnEitherSide) {
  auto d = first_config_difference(kBase, replace(kBase, "  width: 192\n", ""));
  EXPECT_EQ(d.key, "model.width");
  EXPECT_EQ(d.value_b, "<missing>");
  d = first_config_difference(kBase, std::string(kBase) + "seed: 3\n");
  EXPECT_EQ(d.key, "seed");
  EXPECT_EQ(d.value_a, "<missing>");
}

}  // namespace
}  // namespace vit::dist

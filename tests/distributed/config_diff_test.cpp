// first_config_difference: the key path and both values of the first differing key of two
// resolved configs ((key, value) pairs in schema order).
#include <gtest/gtest.h>

#include <algorithm>

#include "distributed/consistency.h"

namespace vit::dist {
namespace {

const ConfigPairs kBase = {{"model.depth", "6"},       {"model.width", "192"},
                           {"data.mean", "[0.49, 0.48]"}, {"data.dataset", "cifar10"},
                           {"optim.lr", "0.1"}};

ConfigPairs with(ConfigPairs pairs, const std::string& key, const std::string& value) {
  for (auto& [k, v] : pairs) {
    if (k == key) v = value;
  }
  return pairs;
}

ConfigPairs without(ConfigPairs pairs, const std::string& key) {
  pairs.erase(std::remove_if(pairs.begin(), pairs.end(), [&](const auto& p) { return p.first == key; }), pairs.end());
  return pairs;
}

TEST(ConfigDifference, EqualConfigsHaveNone) { EXPECT_EQ(first_config_difference(kBase, kBase).key, ""); }

TEST(ConfigDifference, NamesTheFirstDifferingKey) {
  const auto d = first_config_difference(kBase, with(with(kBase, "model.depth", "4"), "optim.lr", "0.3"));
  EXPECT_EQ(d.key, "model.depth");
  EXPECT_EQ(d.value_a, "6");
  EXPECT_EQ(d.value_b, "4");
}

TEST(ConfigDifference, ComparesListValuesWhole) {
  const auto d = first_config_difference(kBase, with(kBase, "data.mean", "[0.49, 0.5]"));
  EXPECT_EQ(d.key, "data.mean");
  EXPECT_EQ(d.value_a, "[0.49, 0.48]");
  EXPECT_EQ(d.value_b, "[0.49, 0.5]");
}

TEST(ConfigDifference, MissingKeysOnEitherSide) {
  auto d = first_config_difference(kBase, without(kBase, "model.width"));
  EXPECT_EQ(d.key, "model.width");
  EXPECT_EQ(d.value_b, "<missing>");
  auto longer = kBase;
  longer.emplace_back("run.seed", "3");
  d = first_config_difference(kBase, longer);
  EXPECT_EQ(d.key, "run.seed");
  EXPECT_EQ(d.value_a, "<missing>");
}

}  // namespace
}  // namespace vit::dist

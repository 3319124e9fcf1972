// Consistency collectives: broadcast_parameters, check_same_config (refusal names the key and
// ranks on every rank), check_parameters_in_sync (a one-ulp difference on one rank is caught).
#include <gtest/gtest.h>

#include <cmath>

#include "core/errors.h"
#include "distributed/consistency.h"
#include "mpi_env.h"

namespace vit::dist::testing {
namespace {

const ConfigPairs kConfig = {
    {"model.depth", "6"}, {"model.width", "192"}, {"data.dataset", "cifar10"}, {"data.mean", "[0.49, 0.48]"}};

TEST(Consistency, BroadcastParametersOfMixedDtypes) {
  auto comm = make_test_comm();
  const double r = comm->rank();
  std::vector<torch::Tensor> params = {torch::full({3, 2}, r), torch::full({5}, r + 0.5, torch::kDouble),
                                       torch::full({2}, r + 1.0), torch::full({1}, r, torch::kBFloat16)};
  broadcast_parameters(*comm, params, 0);
  EXPECT_TRUE(torch::equal(params[0], torch::full({3, 2}, 0.0)));
  EXPECT_TRUE(torch::equal(params[1], torch::full({5}, 0.5, torch::kDouble)));
  EXPECT_TRUE(torch::equal(params[2], torch::full({2}, 1.0)));
  EXPECT_TRUE(torch::equal(params[3], torch::full({1}, 0.0, torch::kBFloat16)));
}

TEST(Consistency, SameConfigPasses) {
  auto comm = make_test_comm();
  EXPECT_NO_THROW(check_same_config(*comm, kConfig));
}

TEST(Consistency, DifferingConfigIsRefusedOnEveryRank) {
  auto comm = make_test_comm();
  const int last = comm->world_size() - 1;
  ConfigPairs mine = kConfig;
  if (comm->rank() == last) mine[0].second = "4";
  try {
    check_same_config(*comm, mine);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string expected = "model.depth: rank 0 has 6, rank " + std::to_string(last) + " has 4";
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

TEST(Consistency, ParameterChecksumsAgreeAndCatchOneUlp) {
  auto comm = make_test_comm();
  torch::manual_seed(11);  // same values on every rank
  std::vector<torch::Tensor> params = {torch::randn({7, 5}), torch::randn({3}), torch::randn({4}, torch::kDouble)};
  const std::vector<std::string> names = {"a.weight", "a.bias", "b"};
  EXPECT_NO_THROW(check_parameters_in_sync(*comm, params, 10, names));

  if (comm->rank() == 1) {
    float* p = params[1].data_ptr<float>() + 2;
    *p = std::nextafter(*p, 1e9f);
  }
  try {
    check_parameters_in_sync(*comm, params, 20, names);
    ADD_FAILURE() << "expected CommError";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("step 20"), std::string::npos) << what;
    EXPECT_NE(what.find("rank(s) 1 "), std::string::npos) << what;
    EXPECT_NE(what.find("a.bias"), std::string::npos) << what;
  }
}

TEST(Consistency, ChecksumSeesPermutedValues) {
  auto comm = make_test_comm();
  std::vector<torch::Tensor> params = {torch::arange(8, torch::kFloat)};
  if (comm->rank() == 1) params[0] = params[0].flip(0).contiguous();  // same multiset of values
  EXPECT_THROW(check_parameters_in_sync(*comm, params, 1), CommError);
}

}  // namespace
}  // namespace vit::dist::testing

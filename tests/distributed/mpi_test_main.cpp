// main() of the MPI test executables: one vit::dist::Runtime, GoogleTest on every rank with
// output on rank 0 only, then every rank's failures gathered, so the exit code of every rank
// (and hence of mpirun) is non-zero when a test failed on any rank, and rank 0 names them.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>

#include "distributed/communicator.h"
#include "distributed/runtime.h"
#include "mpi_env.h"

namespace vit::dist::testing {
namespace {
const LaunchInfo* g_info = nullptr;

std::string failed_tests() {
  std::string names;
  const auto& unit = *::testing::UnitTest::GetInstance();
  for (int i = 0; i < unit.total_test_suite_count(); ++i) {
    const auto& suite = *unit.GetTestSuite(i);
    for (int j = 0; j < suite.total_test_count(); ++j) {
      const auto& test = *suite.GetTestInfo(j);
      if (test.result()->Failed()) names += std::string(suite.name()) + "." + test.name() + " ";
    }
  }
  return names;
}
}  // namespace

const LaunchInfo& launch_info() { return *g_info; }

}  // namespace vit::dist::testing

int main(int argc, char** argv) {
  vit::dist::Runtime runtime(&argc, &argv);
  vit::dist::testing::g_info = &runtime.info();
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = runtime.info().rank;
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int gtest_rc = RUN_ALL_TESTS();
  bool any_failed = false;
  {
    constexpr int64_t kBytes = 4096;
    const std::string mine = vit::dist::testing::failed_tests().substr(0, kBytes - 1);
    auto text = torch::zeros({kBytes}, torch::kUInt8);
    std::memcpy(text.data_ptr(), mine.data(), mine.size());
    std::vector<torch::Tensor> all;
    vit::dist::testing::make_test_comm()->allgather(all, text)->wait();
    for (size_t r = 0; r < all.size(); ++r) {
      const std::string failed(reinterpret_cast<const char*>(all[r].data_ptr<uint8_t>()));
      if (failed.empty()) continue;
      any_failed = true;
      if (rank == 0) std::cout << "[  FAILED  ] on rank " << r << ": " << failed << std::endl;
    }
  }
  return any_failed || gtest_rc != 0 ? 1 : 0;
}

// Shared by the MPI test suites: the launch facts of this test process and communicators made
// for tests (mpi backend, a timeout short enough that a broken test fails instead of hanging).
// Every test runs on every rank in the same order; a test that creates a communicator does so
// on all ranks (MPI_Comm_dup is collective).
#pragma once

#include <memory>

#include "distributed/communicator.h"
#include "distributed/config.h"
#include "distributed/runtime.h"

namespace vit::dist::testing {

const LaunchInfo& launch_info();

inline DistConfig test_config() {
  DistConfig config;
  config.backend = "mpi";
  config.timeout_s = 60.0;
  return config;
}

inline std::shared_ptr<Communicator> make_test_comm(const DistConfig& config = test_config(),
                                                    torch::Device device = torch::kCPU) {
  return make_communicator(config, launch_info(), device);
}

}  // namespace vit::dist::testing

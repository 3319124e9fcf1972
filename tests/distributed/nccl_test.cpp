// NCCL backend on GPUs (label gpu; run under mpirun -np 2 with one GPU per rank). Skipped with
// a reason on machines without CUDA or with fewer GPUs than ranks on a host. Checks each
// collective against closed forms, the GradSync equivalence on CUDA in fp32 and bf16, and
// prints how much of the all-reduce time hides behind backward (overlap).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <vector>

#include "distributed/consistency.h"
#include "distributed/grad_sync.h"
#include "mpi_env.h"
#include "training_helpers.h"

namespace vit::dist::testing {
namespace {

#define SKIP_WITHOUT_GPUS()                                                                        \
  do {                                                                                             \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: NCCL tests need a GPU per rank"; \
    if (static_cast<int>(torch::cuda::device_count()) < launch_info().local_world_size)            \
      GTEST_SKIP() << "fewer GPUs than ranks on this host: NCCL needs one GPU per rank";          \
  } while (false)

std::shared_ptr<Communicator> nccl_comm(DistConfig config = test_config()) {
  config.backend = "nccl";
  return make_test_comm(config, select_device(launch_info()));
}

TEST(Nccl, Collectives) {
  SKIP_WITHOUT_GPUS();
  auto comm = nccl_comm();
  ASSERT_EQ(comm->backend_name(), "nccl");
  const int n = comm->world_size();
  const auto options = torch::TensorOptions().device(comm->device());
  auto sum = torch::full({1000}, comm->rank() + 1.0, options);
  auto avg = sum.clone();
  auto bf16 = sum.to(torch::kBFloat16);
  auto w1 = comm->allreduce(sum);
  auto w2 = comm->allreduce(avg, {ReduceOp::kAvg});
  auto w3 = comm->allreduce(bf16, {ReduceOp::kSum});
  w1->wait();
  w2->wait();
  w3->wait();
  EXPECT_TRUE(torch::equal(sum.cpu(), torch::full({1000}, n * (n + 1) / 2.0)));
  EXPECT_TRUE(torch::allclose(avg.cpu(), torch::full({1000}, (n + 1) / 2.0)));
  EXPECT_TRUE(torch::equal(bf16.cpu(), torch::full({1000}, n * (n + 1) / 2.0, torch::kBFloat16)));
  auto b = torch::arange(10, options) + 100.0 * comm->rank();
  comm->broadcast(b, {n - 1})->wait();
  EXPECT_TRUE(torch::equal(b.cpu(), torch::arange(10, torch::kFloat) + 100.0 * (n - 1)));
  std::vector<torch::Tensor> out;
  comm->allgather(out, torch::full({3}, comm->rank(), options.dtype(torch::kInt)))->wait();
  for (int r = 0; r < n; ++r) EXPECT_TRUE(torch::equal(out[r].cpu(), torch::full({3}, r, torch::kInt)));
  comm->barrier()->wait();
}

double run_cuda_equivalence(bool compress_bf16) {
  auto config = test_config();
  config.bucket_mb = 2048.0 / (1024 * 1024);
  config.compress_bf16 = compress_bf16;
  auto comm = nccl_comm(config);
  const auto device = comm->device();
  const auto batches = make_batches(3, comm->world_size() * 4, {3, 8, 8}, device);
  auto reference = make_tiny_vit(7, device);
  train_reference(reference, batches, 0.2);
  auto model = make_tiny_vit(7 + comm->rank(), device);
  broadcast_parameters(*comm, model.params());
  GradSync sync(model.named(), comm, config);
  train_distributed(model, sync, comm->rank(), comm->world_size(), batches, 2, 0.2);
  check_parameters_in_sync(*comm, model.params(), 3);
  return max_relative_difference(model.params(), reference.params());
}

TEST(Nccl, GradSyncMatchesOneProcessFp32) {
  SKIP_WITHOUT_GPUS();
  EXPECT_LT(run_cuda_equivalence(false), 1e-4);  // TF32 and kernel choices differ a little
}

TEST(Nccl, GradSyncMatchesOneProcessBf16) {
  SKIP_WITHOUT_GPUS();
  EXPECT_LT(run_cuda_equivalence(true), 2e-2);
}

// Times forward+backward alone, the all-reduce of every bucket alone, and both with GradSync;
// the share of communication hidden behind backward is (alone + alone - together) / comm
// alone. Printed for a few batch sizes (compute-bound to communication-bound); the assertion
// only rules out gross serialisation, because on NVLink the all-reduce is short and competes
// with backward for SMs.
TEST(Nccl, OverlapOfAllreduceWithBackward) {
  SKIP_WITHOUT_GPUS();
  auto config = test_config();
  config.bucket_mb = 25.0;
  auto comm = nccl_comm(config);
  const auto device = comm->device();
  torch::manual_seed(0);
  auto net = torch::nn::Sequential();
  for (int i = 0; i < 12; ++i) {
    net->push_back(torch::nn::Linear(2048, 2048));
    net->push_back(torch::nn::GELU());
  }
  net->to(device);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  GradSync sync(named, comm, config);
  auto once = [&](const std::function<void()>& fn) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    torch::cuda::synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  const std::function<void()> comm_step = [&] {
    std::vector<std::shared_ptr<Work>> works;
    for (auto& buffer : sync.bucket_buffers()) works.push_back(comm->allreduce(buffer, {ReduceOp::kAvg}));
    for (auto& w : works) w->wait();
  };
  for (int64_t rows : {128, 512, 2048, 8192}) {
    const auto x = torch::randn({rows, 2048}, torch::TensorOptions().device(device));
    const std::function<void()> backward_step = [&] {
      sync.set_sync(false);
      net->forward(x).mean().backward();
      sync.zero_grad();
    };
    const std::function<void()> together_step = [&] {
      sync.set_sync(true);
      net->forward(x).mean().backward();
      sync.finish();
      sync.zero_grad();
    };
    // 15 rounds of the three, each run timed on its own, and the median of each: a rank's process
    // shares the host (and perhaps its GPU) with other work, so one slow run must not decide, and
    // the rounds in turn expose the three to the same load (a mean of 10 runs each, one after
    // the other, failed once on a rank beside another GPU test).
    for (const auto* fn : {&comm_step, &backward_step, &together_step}) {
      for (int i = 0; i < 3; ++i) once(*fn);
    }
    std::vector<double> comm_runs, backward_runs, together_runs;
    for (int round = 0; round < 15; ++round) {
      comm_runs.push_back(once(comm_step));
      backward_runs.push_back(once(backward_step));
      together_runs.push_back(once(together_step));
    }
    const double comm_only = median(comm_runs), backward_only = median(backward_runs);
    const double together = median(together_runs);
    const double hidden = (backward_only + comm_only - together) / comm_only;
    if (comm->rank() == 0) {
      std::cout << "[ overlap  ] batch " << rows << ": forward+backward " << backward_only * 1e3
                << " ms, all-reduce " << comm_only * 1e3 << " ms, together " << together * 1e3
                << " ms: " << hidden * 100 << "% of communication hidden (" << sync.num_buckets()
                << " buckets)" << std::endl;
    }
    EXPECT_LT(together, (backward_only + comm_only) * 1.25)
        << "rank " << comm->rank() << ", batch " << rows << ": forward+backward " << backward_only * 1e3
        << " ms, all-reduce " << comm_only * 1e3 << " ms, together " << together * 1e3 << " ms";
  }
}

}  // namespace
}  // namespace vit::dist::testing

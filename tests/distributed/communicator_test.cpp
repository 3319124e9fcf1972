// MPI communicator: results of each collective against closed forms in rank and world size.
#include <gtest/gtest.h>

#include "core/errors.h"
#include "mpi_env.h"

namespace vit::dist::testing {
namespace {

double sum_1_to_n(int n) { return n * (n + 1) / 2.0; }

TEST(MpiCommunicator, ReportsLaunchFacts) {
  auto comm = make_test_comm();
  EXPECT_EQ(comm->backend_name(), "mpi");
  EXPECT_EQ(comm->rank(), launch_info().rank);
  EXPECT_EQ(comm->world_size(), launch_info().world_size);
  EXPECT_GE(launch_info().local_rank, 0);
  EXPECT_LT(launch_info().local_rank, launch_info().local_world_size);
  EXPECT_FALSE(launch_info().hostname.empty());
}

TEST(MpiCommunicator, AllreduceOps) {
  auto comm = make_test_comm();
  const int n = comm->world_size();
  const double mine = comm->rank() + 1;
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf}) {
    auto sum = torch::full({5}, mine, dtype), avg = sum.clone(), max = sum.clone(), min = sum.clone();
    auto w1 = comm->allreduce(sum, {ReduceOp::kSum});
    auto w2 = comm->allreduce(avg, {ReduceOp::kAvg});
    auto w3 = comm->allreduce(max, {ReduceOp::kMax});
    auto w4 = comm->allreduce(min, {ReduceOp::kMin});
    w4->wait();  // waiting out of order is fine
    w1->wait();
    w3->wait();
    w2->wait();
    EXPECT_TRUE(torch::equal(sum, torch::full({5}, sum_1_to_n(n), dtype))) << dtype;
    EXPECT_TRUE(torch::equal(avg, torch::full({5}, (n + 1) / 2.0, dtype))) << dtype;
    EXPECT_TRUE(torch::equal(max, torch::full({5}, n, dtype))) << dtype;
    EXPECT_TRUE(torch::equal(min, torch::full({5}, 1.0, dtype))) << dtype;
  }
  auto ints = torch::full({3}, static_cast<int64_t>(mine), torch::kLong);
  comm->allreduce(ints)->wait();
  EXPECT_TRUE(torch::equal(ints, torch::full({3}, static_cast<int64_t>(sum_1_to_n(n)), torch::kLong)));
  auto flag = torch::full({1}, comm->rank() == n - 1, torch::kBool);
  comm->allreduce(flag, {ReduceOp::kMax})->wait();
  EXPECT_TRUE(flag.item<bool>());
}

TEST(MpiCommunicator, BroadcastFromLastRank) {
  auto comm = make_test_comm();
  const int root = comm->world_size() - 1;
  auto t = torch::arange(6, torch::kFloat) + 100.0 * comm->rank();
  comm->broadcast(t, {root})->wait();
  EXPECT_TRUE(torch::equal(t, torch::arange(6, torch::kFloat) + 100.0 * root));
}

TEST(MpiCommunicator, Allgather) {
  auto comm = make_test_comm();
  std::vector<torch::Tensor> out;
  comm->allgather(out, torch::full({2, 3}, comm->rank(), torch::kInt))->wait();
  ASSERT_EQ(static_cast<int>(out.size()), comm->world_size());
  for (int r = 0; r < comm->world_size(); ++r) {
    EXPECT_TRUE(torch::equal(out[r], torch::full({2, 3}, r, torch::kInt))) << r;
  }
}

TEST(MpiCommunicator, BarrierAndCompletion) {
  auto comm = make_test_comm();
  auto work = comm->barrier();
  work->wait();
  EXPECT_TRUE(work->is_completed());
  work->wait();  // twice is fine
}

TEST(MpiCommunicator, RefusesTensorsItCannotCarry) {
  auto comm = make_test_comm();
  auto strided = torch::zeros({4, 4}).t();
  EXPECT_THROW(comm->allreduce(strided), CommError);
  auto ints = torch::zeros({4}, torch::kInt);
  EXPECT_THROW(comm->allreduce(ints, {ReduceOp::kAvg}), CommError);
  auto bad_root = torch::zeros({1});
  EXPECT_THROW(comm->broadcast(bad_root, {comm->world_size()}), CommError);
}

TEST(MpiCommunicator, RefusesCudaDevice) {
  EXPECT_THROW(make_test_comm(test_config(), torch::Device(torch::kCUDA, 0)), ConfigError);
}

}  // namespace
}  // namespace vit::dist::testing

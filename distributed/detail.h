// Internal to distributed/: glue between runtime.cpp (which owns MPI) and the communicator
// backends. Nothing outside distributed/*.cpp includes this. No MPI or NCCL types appear here,
// so backends that do not use MPI directly stay free of mpi.h.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/config.h"
#include "distributed/runtime.h"

namespace vit::dist::detail {

// Callbacks run by Runtime::abort_job before MPI_Abort (NCCL communicators register
// ncclCommAbort). Returns an id for remove_abort_hook. Thread-safe.
int add_abort_hook(std::function<void()> hook);
void remove_abort_hook(int id);

// Blocking broadcast of raw bytes over MPI_COMM_WORLD (bootstrap: the NCCL unique id). All ranks
// call it in the same order. Throws CommError naming `what` after `timeout_s`.
void bootstrap_broadcast(void* data, size_t bytes, int root, double timeout_s, const char* what);

// Backend factories; make_communicator (communicator.cpp) picks one.
std::shared_ptr<Communicator> make_local_communicator(torch::Device device);
std::shared_ptr<Communicator> make_mpi_communicator(const DistConfig& config, const LaunchInfo& info);
std::shared_ptr<Communicator> make_nccl_communicator(const DistConfig& config, const LaunchInfo& info,
                                                     torch::Device device);

// "allreduce", "broadcast", ... for messages.
const char* reduce_op_name(ReduceOp op);

// allgather's `out`: filled with world_size tensors like `input` when empty, else checked to
// hold world_size tensors (CommError naming `what`).
void prepare_allgather_output(std::vector<torch::Tensor>& out, const torch::Tensor& input, int world_size,
                              const std::string& what);

}  // namespace vit::dist::detail

// Launch discovery and the MPI lifetime of one process of a data-parallel job.
//
// `Runtime` turns N processes started by `mpirun -np N` (one or many hosts, `--hostfile`) or by
// SLURM's `srun --mpi=pmix` into one job: rank, world size and local rank all come from MPI
// (the local rank from a shared-memory split of MPI_COMM_WORLD), never from environment
// variables, so every launcher that starts MPI processes works. A program run without a
// launcher is a job of one process.
//
// Not here: communicators (communicator.h), gradient synchronisation (grad_sync.h).
#pragma once

#include <torch/torch.h>

#include <string>

namespace vit::dist {

struct LaunchInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // rank among the processes of this host
  int local_world_size = 1;  // processes on this host
  std::string hostname;
};

// RAII owner of MPI. Construct exactly one, first thing in main, before any thread starts;
// destroy it last (after every Communicator), which finalises MPI. Asks for
// MPI_THREAD_MULTIPLE (see Note [MPI threads] in runtime.cpp) and fails with CommError when the
// MPI library cannot give at least MPI_THREAD_SERIALIZED.
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const LaunchInfo& info() const { return info_; }

  // Collective over MPI_COMM_WORLD: whether every rank passed the same value (true in a job of
  // one process). For what must agree before anything else is collective, such as the mode a rank
  // was started in: a rank that goes its own way would leave its peers waiting forever. A peer
  // that does not answer within timeout_s is a CommError.
  bool same_on_every_rank(int64_t value, double timeout_s = 120.0) const;

  // Ends the whole job: aborts every live NCCL communicator (so no peer blocks in a kernel),
  // flushes stdout/stderr, then MPI_Abort(MPI_COMM_WORLD, code), which makes mpirun kill every
  // process. Safe from any thread; without MPI it exits this process with `code`.
  // abort_communicators = false skips the first step: for a thread that found the device stuck,
  // where ncclCommAbort could wait on it too.
  [[noreturn]] static void abort_job(int code, bool abort_communicators = true);

 private:
  LaunchInfo info_;
  bool thread_multiple_ = false;
};

// cuda:<local_rank> when CUDA is available (warns when a host has more ranks than GPUs and
// wraps around), else CPU. Does not set the current CUDA device: the NCCL communicator does.
torch::Device select_device(const LaunchInfo& info);

}  // namespace vit::dist

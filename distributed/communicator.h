// Communicator: the collectives data-parallel training needs, in the shape of PyTorch c10d's
// ProcessGroup, kept small. Backends: MPI for CPU tensors (and bootstrap), NCCL for CUDA tensors
// (compiled only with CUDA), and a local no-op one for a job of one process.
//
// Contract for every collective here:
//   * All ranks call collectives on a communicator in the same order, with tensors of the same
//     dtype and shape. Nothing checks this; a mismatch hangs until the timeout (see below).
//   * A collective returns a Work handle. Between issuing it and wait() nobody reads or writes
//     the tensor(s) (they are in flight). Work keeps the tensors alive until it completes.
//   * wait() on the MPI backend blocks the calling thread, polling MPI_Test, until the
//     collective completes or `distributed.timeout_s` has passed since it was issued; then it
//     throws CommError naming the operation, its sequence number and the rank.
//     wait() on the NCCL backend does not block the host: it makes the current CUDA stream
//     (the compute stream) wait for the collective; a watchdog thread bounds the time instead
//     and, on timeout or NCCL error, aborts the communicator and the whole job.
//   * After a CommError the communicator is broken: further collectives throw. The only
//     sensible reaction is to let the error reach main, which calls Runtime::abort_job.
//   * Collectives on one communicator are issued from one thread at a time (the training thread,
//     or autograd's thread while backward() blocks the training thread).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "distributed/config.h"
#include "distributed/runtime.h"

namespace vit::dist {

enum class ReduceOp { kSum, kAvg, kMax, kMin };

struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;  // kAvg needs a floating-point tensor
};

struct BroadcastOptions {
  int root = 0;
};

// A handle on one issued collective.
class Work {
 public:
  virtual ~Work() = default;
  // Waits as described above; afterwards the tensors may be touched (on GPU: by work queued on
  // the current stream after this call). Calling it twice is fine. Throws CommError.
  virtual void wait() = 0;
  // Non-blocking: has the collective finished? On MPI this also drives MPI's progress engine,
  // which is how overlapped gradient buckets advance while backward runs.
  virtual bool is_completed() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual torch::Device device() const = 0;  // where this communicator's tensors must live
  virtual std::string backend_name() const = 0;  // "mpi", "nccl" or "local"

  // In place: every rank ends with op(tensor of every rank). Contiguous tensor on device().
  virtual std::shared_ptr<Work> allreduce(torch::Tensor& tensor,
                                          const AllreduceOptions& options = {}) = 0;
  // In place: every rank ends with the root's tensor.
  virtual std::shared_ptr<Work> broadcast(torch::Tensor& tensor,
                                          const BroadcastOptions& options = {}) = 0;
  // out[r] = input of rank r, for every rank r. `out` may be empty (filled with tensors like
  // `input`) or hold world_size() tensors shaped like `input`; it is valid after wait().
  virtual std::shared_ptr<Work> allgather(std::vector<torch::Tensor>& out,
                                          const torch::Tensor& input) = 0;
  // wait() returns once every rank has called barrier() (blocks the host on every backend).
  virtual std::shared_ptr<Work> barrier() = 0;

  // Bounds work queued so far on the current CUDA stream by the collective timeout, as if it were
  // a collective: for a replayed CUDA graph that holds captured collectives (the host never
  // waits for those). NCCL: the watchdog tracks an event recorded now; on timeout it aborts the
  // job. Other backends run nothing outside their own wait(): a no-op there.
  virtual void watch_current_stream(const std::string& /*what*/) {}

  // Best-effort, non-blocking teardown of in-flight work (ncclCommAbort); afterwards the
  // communicator is unusable. Runtime::abort_job calls it for NCCL communicators.
  virtual void abort() = 0;
};

// The communicator for this job. world_size 1: a local communicator whose collectives are
// no-ops (no MPI traffic at all). Otherwise `distributed.backend`: auto picks NCCL for a CUDA
// device and MPI for CPU; mpi requires a CPU device, nccl a CUDA device (ConfigError otherwise,
// also for nccl in a build without CUDA). Collective over MPI_COMM_WORLD: all ranks call it,
// in the same order as other communicator creations. Destroy communicators before the Runtime.
std::shared_ptr<Communicator> make_communicator(const DistConfig& config, const LaunchInfo& info,
                                                torch::Device device);

}  // namespace vit::dist

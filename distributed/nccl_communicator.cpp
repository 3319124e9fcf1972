// NCCL backend of Communicator, for CUDA tensors. Compiled only when CMake finds CUDA and NCCL.
//
// Streams (contract with callers, see communicator.h):
//   issue:  record event A on the caller's current stream (the compute stream); the
//           communicator's own stream waits A; the NCCL call runs on the comm stream; event B
//           is recorded after it. Tensors get record_stream(comm stream), so the caching
//           allocator does not reuse their memory before the collective is done.
//   wait(): the caller's current stream waits B; the host does not block (barrier excepted).
// Bootstrap: rank 0 creates the unique id, MPI broadcasts it (detail::bootstrap_broadcast),
// every rank calls ncclCommInitRank on the GPU it was given.
// CUDA graphs: a collective issued while the current stream is being captured is recorded into
//   the graph (the comm stream joins the capture through event A and leaves it when wait() makes
//   the capturing stream wait B). Such work is not tracked (replay runs it later; the caller
//   bounds a replay with watch_current_stream) and its event is never queried; nor do its tensors
//   get record_stream: the caller must keep them (the Work does) and call wait() before
//   dropping the Work, or later captured kernels may reuse their memory while the collective
//   still runs in a replay.
// Failure: a Watchdog thread polls B of every in-flight collective and ncclCommGetAsyncError;
// on timeout or error it logs the operation and rank, aborts the communicator
// (ncclCommAbort) and ends the job (Runtime::abort_job -> MPI_Abort). When that poll itself
// blocks (the device is stuck and the host waits in a launch), the watchdog's guard thread
// ends the job without ncclCommAbort. Synchronous NCCL errors
// throw CommError with the operation, rank and NCCL version.
#include <nccl.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "distributed/detail.h"
#include "distributed/watchdog.h"

namespace vit::dist {
namespace {

std::string nccl_version() {
  int code = 0;
  ncclGetVersion(&code);
  // Since NCCL 2.9 the code is major * 10000 + minor * 100 + patch.
  return std::to_string(code / 10000) + "." + std::to_string(code % 10000 / 100) + "." +
         std::to_string(code % 100);
}

ncclDataType_t nccl_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kByte: return ncclUint8;
    case torch::kChar: return ncclInt8;
    case torch::kBool: return ncclUint8;
    default: VIT_THROW(CommError, "NCCL backend: unsupported dtype ", type, " [NCCL ", nccl_version(), "]");
  }
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();  // not ours to report: a later launch check would blame itself
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

// The watchdog thread queries events while the training thread may be capturing a CUDA graph.
// The trainer captures in thread-local mode, which leaves other threads alone; relaxed mode on
// this thread keeps a capture in global mode (someone else's) from failing on our queries too.
void relax_capture_mode_of_this_thread() {
  thread_local bool relaxed = [] {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    return true;
  }();
  (void)relaxed;
}

ncclRedOp_t nccl_op(ReduceOp op, torch::ScalarType type) {
  switch (op) {
    case ReduceOp::kSum: return type == torch::kBool ? ncclMax : ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator;

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclCommunicator> comm, std::string what,
           std::shared_ptr<c10::cuda::CUDAEvent> done, std::vector<torch::Tensor> keep,
           std::function<void()> after_wait, bool host_block, bool captured)
      : comm_(std::move(comm)),
        what_(std::move(what)),
        done_(std::move(done)),
        keep_(std::move(keep)),
        after_wait_(std::move(after_wait)),
        host_block_(host_block),
        captured_(captured) {}
  void wait() override;
  // A captured collective has not run (replay runs it); its event must not be queried.
  bool is_completed() override { return !captured_ && done_->query(); }

 private:
  std::shared_ptr<NcclCommunicator> comm_;
  std::string what_;
  std::shared_ptr<c10::cuda::CUDAEvent> done_;  // recorded on the comm stream after the collective
  std::vector<torch::Tensor> keep_;
  std::function<void()> after_wait_;  // runs once, on the waiting (compute) stream
  bool host_block_;
  bool captured_;  // issued during CUDA graph capture
  bool waited_ = false;
};

class NcclCommunicator : public Communicator, public std::enable_shared_from_this<NcclCommunicator> {
 public:
  NcclCommunicator(const DistConfig& config, const LaunchInfo& info, torch::Device device)
      : rank_(info.rank),
        world_size_(info.world_size),
        device_(device),
        hostname_(info.hostname),
        timeout_s_(config.timeout_s),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {
    c10::cuda::set_device(device.index());  // later CUDA calls of this process default to it
    ncclUniqueId id;
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    detail::bootstrap_broadcast(&id, sizeof(id), 0, timeout_s_, "NCCL unique id");
    {
      c10::cuda::CUDAGuard guard(device_);
      check(ncclCommInitRank(&comm_, world_size_, id, rank_), "ncclCommInitRank");
    }
    abort_hook_ = detail::add_abort_hook([this] { abort(); });
    watchdog_ = std::make_unique<Watchdog>(
        timeout_s_,
        [this] {
          relax_capture_mode_of_this_thread();
          return async_error();
        },
        [this](const std::string& message) { on_watchdog_failure(message); }, std::chrono::milliseconds(100),
        [this](const std::string& message) { on_device_stuck(message); });
  }

  ~NcclCommunicator() override {
    // Let in-flight work finish first (the watchdog still bounds it): destroying a communicator
    // with a collective stuck on a dead peer would block forever.
    while (watchdog_->num_pending() > 0 && !watchdog_->failed()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    watchdog_.reset();
    detail::remove_abort_hook(abort_hook_);
    if (!aborted_.exchange(true)) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  torch::Device device() const override { return device_; }
  std::string backend_name() const override { return "nccl"; }
  double timeout_s() const { return timeout_s_; }
  bool failed() const { return aborted_ || watchdog_->failed(); }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& options) override {
    const std::string what = describe("allreduce", tensor, detail::reduce_op_name(options.op));
    check_tensor(tensor, what);
    VIT_CHECK(options.op != ReduceOp::kAvg || tensor.is_floating_point(), CommError, what,
              ": avg needs a floating-point tensor");
    const auto type = nccl_type(tensor.scalar_type());
    const auto op = nccl_op(options.op, tensor.scalar_type());
    return enqueue(what, {tensor}, nullptr, false, [&](cudaStream_t stream) {
      return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, op, comm_, stream);
    });
  }

  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& options) override {
    const std::string what = describe("broadcast", tensor, "root " + std::to_string(options.root));
    check_tensor(tensor, what);
    VIT_CHECK(options.root >= 0 && options.root < world_size_, CommError, what, ": root ",
              options.root, " is not a rank of this job of ", world_size_);
    const auto type = nccl_type(tensor.scalar_type());
    return enqueue(what, {tensor}, nullptr, false, [&](cudaStream_t stream) {
      return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(), type, options.root,
                           comm_, stream);
    });
  }

  std::shared_ptr<Work> allgather(std::vector<torch::Tensor>& out, const torch::Tensor& input) override {
    const std::string what = describe("allgather", input, "");
    check_tensor(input, what);
    detail::prepare_allgather_output(out, input, world_size_, what);
    auto flat = torch::empty({world_size_, input.numel()}, input.options());  // on the compute stream
    const auto type = nccl_type(input.scalar_type());
    auto copy_out = [flat, out]() mutable {  // after wait(), on the waiting stream
      torch::NoGradGuard no_grad;
      for (size_t r = 0; r < out.size(); ++r) out[r].copy_(flat[r].view_as(out[r]));
    };
    return enqueue(what, {input, flat}, std::move(copy_out), false, [&](cudaStream_t stream) {
      return ncclAllGather(input.data_ptr(), flat.data_ptr(), input.numel(), type, comm_, stream);
    });
  }

  std::shared_ptr<Work> barrier() override {
    auto token = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
    const std::string what = "barrier #" + std::to_string(++seq_);
    check_usable(what);
    return enqueue(what, {token}, nullptr, true, [&](cudaStream_t stream) {
      return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm_, stream);
    });
  }

  void abort() override {
    if (!aborted_.exchange(true)) ncclCommAbort(comm_);
  }

  void watch_current_stream(const std::string& what) override {
    c10::cuda::CUDAGuard device_guard(device_);
    auto done = std::make_shared<c10::cuda::CUDAEvent>();
    done->record(c10::cuda::getCurrentCUDAStream(device_.index()));
    watchdog_->track(what + " " + where(), [done] {
      relax_capture_mode_of_this_thread();
      return done->query();
    });
  }

  std::string where() const {
    return "on rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + " (" +
           hostname_ + ", " + device_.str() + ") [NCCL " + nccl_version() + "]";
  }

 private:
  template <typename Launch>
  std::shared_ptr<Work> enqueue(const std::string& what, std::vector<torch::Tensor> tensors,
                                std::function<void()> after_wait, bool host_block, Launch launch) {
    c10::cuda::CUDAGuard device_guard(device_);
    auto compute = c10::cuda::getCurrentCUDAStream(device_.index());
    const bool captured = capturing(compute.stream());
    VIT_CHECK(!(captured && host_block), CommError, "NCCL ", what, " ", where(),
              ": blocks the host, which a CUDA graph capture cannot record");
    c10::cuda::CUDAEvent ready;
    ready.record(compute);
    ready.block(stream_);
    {
      c10::cuda::CUDAStreamGuard guard(stream_);
      check(launch(stream_.stream()), what);
    }
    auto done = std::make_shared<c10::cuda::CUDAEvent>();
    done->record(stream_);
    if (!captured) {
      for (auto& t : tensors) t.record_stream(stream_);
      watchdog_->track("NCCL " + what + " " + where(), [done] {
        relax_capture_mode_of_this_thread();
        return done->query();
      });
    }
    return std::make_shared<NcclWork>(shared_from_this(), what, done, std::move(tensors),
                                      std::move(after_wait), host_block, captured);
  }

  std::string describe(const char* op, const torch::Tensor& t, const std::string& extra) {
    std::string text = std::string(op) + " #" + std::to_string(++seq_) + " (";
    if (!extra.empty()) text += extra + ", ";
    return text + std::to_string(t.numel()) + " x " + std::string(c10::toString(t.scalar_type())) + ")";
  }
  void check_usable(const std::string& what) const {
    VIT_CHECK(!failed(), CommError, "NCCL ", what, " ", where(),
              ": the communicator was aborted after an earlier failure; abort the job");
  }
  void check_tensor(const torch::Tensor& t, const std::string& what) const {
    check_usable(what);
    VIT_CHECK(t.defined() && t.device() == device_ && t.is_contiguous(), CommError, "NCCL ", what, " ",
              where(), ": needs a defined, contiguous tensor on ", device_.str());
  }
  void check(ncclResult_t rc, const std::string& what) const {
    if (rc == ncclSuccess) return;
    const char* last = comm_ != nullptr ? ncclGetLastError(comm_) : ncclGetLastError(nullptr);
    VIT_THROW(CommError, "NCCL ", what, " failed ", where(), ": ", ncclGetErrorString(rc),
              (last != nullptr && *last != 0 ? std::string("; ") + last : std::string()));
  }
  std::string async_error() const {
    if (aborted_) return "";
    ncclResult_t result = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &result) != ncclSuccess || result == ncclSuccess ||
        result == ncclInProgress) {
      return "";
    }
    return str("NCCL asynchronous error ", where(), ": ", ncclGetErrorString(result), "; ",
               ncclGetLastError(comm_));
  }
  // Watchdog thread. Never returns: the job ends here, on every rank (MPI_Abort).
  void on_watchdog_failure(const std::string& message) {
    log_error(message, "; aborting the NCCL communicator and the job");
    abort();
    Runtime::abort_job(1);
  }

  // Guard thread: the watchdog itself is stuck in a device query, so the device is stuck too and
  // ncclCommAbort could wait on it: end the job without touching the device.
  void on_device_stuck(const std::string& message) {
    log_error("NCCL ", where(), ": ", message, "; ending the job");
    Runtime::abort_job(1, /*abort_communicators=*/false);
  }

  int rank_;
  int world_size_;
  torch::Device device_;
  std::string hostname_;
  double timeout_s_;
  c10::cuda::CUDAStream stream_;  // the comm stream: every collective of this communicator
  ncclComm_t comm_ = nullptr;
  uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  int abort_hook_ = -1;
  std::unique_ptr<Watchdog> watchdog_;
};

void NcclWork::wait() {
  VIT_CHECK(!comm_->failed(), CommError, "NCCL ", what_, " ", comm_->where(),
            ": the communicator was aborted (watchdog timeout or NCCL error)");
  if (host_block_) {
    // Barrier: the host waits. The watchdog bounds the time; poll so its failure is seen.
    while (!done_->query()) {
      VIT_CHECK(!comm_->failed(), CommError, "NCCL ", what_, " ", comm_->where(),
                ": the communicator was aborted while waiting (watchdog timeout or NCCL error)");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  done_->block(c10::cuda::getCurrentCUDAStream(done_->device_index()));
  if (!waited_) {
    waited_ = true;
    if (after_wait_) after_wait_();
  }
}

}  // namespace

namespace detail {
std::shared_ptr<Communicator> make_nccl_communicator(const DistConfig& config, const LaunchInfo& info,
                                                     torch::Device device) {
  return std::make_shared<NcclCommunicator>(config, info, device);
}
}  // namespace detail

}  // namespace vit::dist

// MPI backend of Communicator, for CPU tensors: non-blocking MPI collectives (MPI_Iallreduce,
// MPI_Ibcast, MPI_Iallgather, MPI_Ibarrier) on a private duplicate of MPI_COMM_WORLD.
//
// Waiting: Work::wait() polls MPI_Test until the request completes or `timeout_s` has passed
// since the collective was issued, then throws CommError naming the operation, its sequence
// number and the rank. Polling (yield first, short sleeps later) keeps oversubscribed hosts
// usable. Progress of collectives overlapped with backward comes from GradSync polling
// Work::is_completed() in its gradient hooks (Note [MPI threads] in runtime.cpp).
//
// Average is a sum followed by a division when the collective completes. bf16 and fp16 travel
// as 16-bit words reduced by our own MPI_Op (MPI has no such types), so compression really
// halves the bytes.
#include <mpi.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <climits>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "distributed/detail.h"
#include "distributed/peer_probe.h"

namespace vit::dist {
namespace {

template <typename T, typename F>
void reduce16(void* in, void* inout, int* len, F combine) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) {
    b[i] = T(combine(static_cast<float>(a[i]), static_cast<float>(b[i])));
  }
}
template <typename T>
void sum16(void* in, void* inout, int* len, MPI_Datatype*) {
  reduce16<T>(in, inout, len, [](float x, float y) { return x + y; });
}
template <typename T>
void max16(void* in, void* inout, int* len, MPI_Datatype*) {
  reduce16<T>(in, inout, len, [](float x, float y) { return x > y || x != x ? x : y; });
}
template <typename T>
void min16(void* in, void* inout, int* len, MPI_Datatype*) {
  reduce16<T>(in, inout, len, [](float x, float y) { return x < y || x != x ? x : y; });
}

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return std::string(text, len);
}

class MpiCommunicator;

class MpiWork : public Work {
 public:
  MpiWork(std::shared_ptr<MpiCommunicator> comm, std::string what, uint64_t seq, MPI_Request request,
          std::vector<torch::Tensor> keep, std::function<void()> on_done);
  ~MpiWork() override;
  void wait() override;
  bool is_completed() override;

 private:
  bool test();
  std::shared_ptr<MpiCommunicator> comm_;
  std::string what_;  // "allreduce #12 (sum, 4096 x Float)"
  uint64_t seq_;      // 12: this communicator's collective count
  MPI_Request request_;
  std::vector<torch::Tensor> keep_;  // alive until MPI is done with the buffers
  std::function<void()> on_done_;    // e.g. divide by world size; runs once
  std::chrono::steady_clock::time_point start_;
  bool done_ = false;
};

class MpiCommunicator : public Communicator, public std::enable_shared_from_this<MpiCommunicator> {
 public:
  MpiCommunicator(const DistConfig& config, const LaunchInfo& info)
      : timeout_s_(config.timeout_s), hostname_(info.hostname) {
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_size_);
    MPI_User_function* fns[2][3] = {{sum16<c10::BFloat16>, max16<c10::BFloat16>, min16<c10::BFloat16>},
                                    {sum16<c10::Half>, max16<c10::Half>, min16<c10::Half>}};
    for (int t = 0; t < 2; ++t) {
      for (int o = 0; o < 3; ++o) check(MPI_Op_create(fns[t][o], 1, &ops16_[t][o]), "MPI_Op_create");
    }
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized || broken_) return;  // a broken comm may still have requests in flight: leak it
    for (auto& row : ops16_) {
      for (auto& op : row) MPI_Op_free(&op);
    }
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  torch::Device device() const override { return torch::Device(torch::kCPU); }
  std::string backend_name() const override { return "mpi"; }
  double timeout_s() const { return timeout_s_; }
  bool broken() const { return broken_; }
  std::string diagnose(uint64_t seq) { return probe_.diagnose(seq); }

  std::shared_ptr<Work> allreduce(torch::Tensor& tensor, const AllreduceOptions& options) override {
    const std::string what = describe("allreduce", tensor, detail::reduce_op_name(options.op));
    check_tensor(tensor, what);
    VIT_CHECK(options.op != ReduceOp::kAvg || tensor.is_floating_point(), CommError, what,
              ": avg needs a floating-point tensor");
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count(tensor), mpi_type(tensor),
                         mpi_op(options.op, tensor.scalar_type()), comm_, &request),
          what);
    std::function<void()> on_done;
    if (options.op == ReduceOp::kAvg) {
      on_done = [tensor, n = world_size_]() mutable {
        torch::NoGradGuard no_grad;
        tensor.div_(n);
      };
    }
    return start(what, request, {tensor}, std::move(on_done));
  }

  std::shared_ptr<Work> broadcast(torch::Tensor& tensor, const BroadcastOptions& options) override {
    const std::string what = describe("broadcast", tensor, "root " + std::to_string(options.root));
    check_tensor(tensor, what);
    VIT_CHECK(options.root >= 0 && options.root < world_size_, CommError, what, ": root ",
              options.root, " is not a rank of this job of ", world_size_);
    MPI_Request request;
    check(MPI_Ibcast(tensor.data_ptr(), count(tensor), mpi_type(tensor), options.root, comm_, &request),
          what);
    return start(what, request, {tensor}, nullptr);
  }

  std::shared_ptr<Work> allgather(std::vector<torch::Tensor>& out, const torch::Tensor& input) override {
    const std::string what = describe("allgather", input, "");
    check_tensor(input, what);
    detail::prepare_allgather_output(out, input, world_size_, what);
    // Gather into one flat buffer, then copy into `out` when done: `out` may be anything.
    auto flat = torch::empty({world_size_, input.numel()}, input.options());
    MPI_Request request;
    check(MPI_Iallgather(input.data_ptr(), count(input), mpi_type(input), flat.data_ptr(),
                         count(input), mpi_type(input), comm_, &request),
          what);
    auto on_done = [flat, out]() mutable {
      torch::NoGradGuard no_grad;
      for (size_t r = 0; r < out.size(); ++r) out[r].copy_(flat[r].view_as(out[r]));
    };
    return start(what, request, {input, flat}, std::move(on_done));
  }

  std::shared_ptr<Work> barrier() override {
    const std::string what = "barrier #" + std::to_string(++seq_);
    probe_.note_issued(seq_);
    check_usable(what);
    MPI_Request request;
    check(MPI_Ibarrier(comm_, &request), what);
    return start(what, request, {}, nullptr);
  }

  void abort() override { broken_ = true; }

  // Called by MpiWork on timeout or MPI error: marks this communicator broken and throws.
  [[noreturn]] void fail(const std::string& message) {
    broken_ = true;
    throw CommError(message);
  }
  std::string where() const {
    return "on rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + " (" + hostname_ + ")";
  }

 private:
  std::string describe(const char* op, const torch::Tensor& t, const std::string& extra) {
    std::string text = std::string(op) + " #" + std::to_string(++seq_) + " (";
    probe_.note_issued(seq_);
    if (!extra.empty()) text += extra + ", ";
    return text + std::to_string(t.numel()) + " x " + std::string(c10::toString(t.scalar_type())) + ")";
  }
  void check_usable(const std::string& what) const {
    VIT_CHECK(!broken_, CommError, "MPI ", what, " ", where(),
              ": the communicator is broken by an earlier failure; abort the job");
  }
  void check_tensor(const torch::Tensor& t, const std::string& what) const {
    check_usable(what);
    VIT_CHECK(t.defined() && t.device().is_cpu() && t.is_contiguous(), CommError, "MPI ", what,
              ": needs a defined, contiguous CPU tensor (use the nccl backend for CUDA tensors)");
    VIT_CHECK(t.numel() <= INT_MAX, CommError, "MPI ", what, ": more than 2^31 elements; split it");
  }
  static int count(const torch::Tensor& t) { return static_cast<int>(t.numel()); }
  MPI_Datatype mpi_type(const torch::Tensor& t) const {
    switch (t.scalar_type()) {
      case torch::kFloat: return MPI_FLOAT;
      case torch::kDouble: return MPI_DOUBLE;
      case torch::kInt: return MPI_INT32_T;
      case torch::kLong: return MPI_INT64_T;
      case torch::kShort: return MPI_INT16_T;
      case torch::kChar: return MPI_INT8_T;
      case torch::kByte: return MPI_UINT8_T;
      case torch::kBool: return MPI_C_BOOL;
      case torch::kBFloat16:
      case torch::kHalf: return MPI_UINT16_T;  // reduced by ops16_
      default:
        VIT_THROW(CommError, "MPI backend: unsupported dtype ", t.scalar_type(), " ", where());
    }
  }
  MPI_Op mpi_op(ReduceOp op, torch::ScalarType type) const {
    const int index = op == ReduceOp::kMax ? 1 : op == ReduceOp::kMin ? 2 : 0;  // avg = sum, then divide
    if (type == torch::kBFloat16) return ops16_[0][index];
    if (type == torch::kHalf) return ops16_[1][index];
    if (type == torch::kBool) return index == 2 ? MPI_LAND : MPI_LOR;
    return index == 1 ? MPI_MAX : index == 2 ? MPI_MIN : MPI_SUM;
  }
  void check(int rc, const std::string& what) {
    if (rc != MPI_SUCCESS) fail("MPI " + what + " failed " + where() + ": " + mpi_error_text(rc));
  }
  std::shared_ptr<Work> start(const std::string& what, MPI_Request request,
                              std::vector<torch::Tensor> keep, std::function<void()> on_done) {
    return std::make_shared<MpiWork>(shared_from_this(), what, seq_, request, std::move(keep),
                                     std::move(on_done));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_s_;
  std::string hostname_;
  uint64_t seq_ = 0;
  bool broken_ = false;
  PeerProbe probe_;  // Note [Naming a hung peer]
  MPI_Op ops16_[2][3];  // [bf16, fp16][sum, max, min]
};

MpiWork::MpiWork(std::shared_ptr<MpiCommunicator> comm, std::string what, uint64_t seq,
                 MPI_Request request, std::vector<torch::Tensor> keep, std::function<void()> on_done)
    : comm_(std::move(comm)),
      what_(std::move(what)),
      seq_(seq),
      request_(request),
      keep_(std::move(keep)),
      on_done_(std::move(on_done)),
      start_(std::chrono::steady_clock::now()) {}

MpiWork::~MpiWork() {
  if (done_) return;
  if (comm_->broken()) {
    new std::vector<torch::Tensor>(std::move(keep_));  // never completes: keep buffers alive
    return;
  }
  try {
    wait();  // MPI forbids freeing a non-blocking collective's request: complete it
  } catch (...) {
    // Timed out while unwinding: MPI may still write into the buffers, so never free them.
    new std::vector<torch::Tensor>(std::move(keep_));
  }
}

bool MpiWork::test() {
  int done = 0;
  const int rc = MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
  if (rc != MPI_SUCCESS) {
    done_ = true;  // do not retry from the destructor
    new std::vector<torch::Tensor>(std::move(keep_));
    comm_->fail("MPI " + what_ + " failed " + comm_->where() + ": " + mpi_error_text(rc));
  }
  if (done) {
    done_ = true;
    if (on_done_) on_done_();
    keep_.clear();
  }
  return done_;
}

bool MpiWork::is_completed() { return done_ || test(); }

void MpiWork::wait() {
  const auto deadline = start_ + std::chrono::duration<double>(comm_->timeout_s());
  int polls = 0;
  auto last_poll = std::chrono::steady_clock::now();
  double longest_gap = 0.0;  // between two polls: long when this process itself was stopped
  while (!is_completed()) {
    const auto now = std::chrono::steady_clock::now();
    longest_gap = std::max(longest_gap, std::chrono::duration<double>(now - last_poll).count());
    last_poll = now;
    if (now > deadline) {
      done_ = true;
      new std::vector<torch::Tensor>(std::move(keep_));  // MPI may still write into them
      // A rank that did not run (SIGSTOP, a debugger, a frozen machine) finds its peers gone when
      // it runs again: it is the one they waited for, so it must not blame them.
      if (longest_gap > comm_->timeout_s() / 2)
        comm_->fail(str("MPI ", what_, " ", comm_->where(), ": this rank did not run for ", longest_gap,
                        " s (stopped: SIGSTOP, a debugger or a frozen machine), longer than distributed.timeout_s; "
                        "it is the rank its peers waited for"));
      comm_->fail(str("MPI ", what_, " timed out after ", comm_->timeout_s(), " s ", comm_->where(),
                      " (distributed.timeout_s): ", comm_->diagnose(seq_)));
    }
    if (++polls < 2000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

}  // namespace

namespace detail {
std::shared_ptr<Communicator> make_mpi_communicator(const DistConfig& config, const LaunchInfo& info) {
  return std::make_shared<MpiCommunicator>(config, info);
}
}  // namespace detail

}  // namespace vit::dist

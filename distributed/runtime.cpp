// Runtime: MPI_Init_thread / MPI_Finalize, launch discovery (rank, world size, local rank from
// a shared-memory split), job abort, device choice, and the MPI bootstrap helpers backends use.
//
// Note [MPI threads]
// We ask for MPI_THREAD_MULTIPLE because two threads other than main may call MPI: the NCCL
// watchdog calls MPI_Abort when a collective is stuck, and on GPU autograd runs gradient hooks
// on its device thread. The MPI backend itself issues collectives from one thread at a time
// (see communicator.h) and drives progress by polling from gradient hooks, not from a progress
// thread. SERIALIZED is accepted (with a warning) because that single-issuer rule holds.
#include "distributed/runtime.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "core/strings.h"
#include "distributed/detail.h"

namespace vit::dist {
namespace {

std::timed_mutex& hooks_mutex() {
  static std::timed_mutex mutex;
  return mutex;
}
std::map<int, std::function<void()>>& hooks() {
  static std::map<int, std::function<void()>> map;
  return map;
}

bool mpi_live() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  VIT_THROW(CommError, "MPI ", what, " failed: ", std::string(text, len));
}

// Polls a non-blocking collective until it completes; past timeout_s, a CommError of `timed_out`.
void wait_until_done(MPI_Request& request, double timeout_s, const char* what, const std::string& timed_out) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    VIT_CHECK(std::chrono::steady_clock::now() < deadline, CommError, timed_out);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace

Runtime::Runtime(int* argc, char*** argv) {
  VIT_CHECK(!mpi_live(), CommError, "vit::dist::Runtime: MPI is already initialised; create one Runtime only");
  int provided = MPI_THREAD_SINGLE;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  // Return codes instead of MPI's default abort, so failures become CommError with context.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  thread_multiple_ = provided >= MPI_THREAD_MULTIPLE;

  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size), "MPI_Comm_size");
  MPI_Comm local = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type(shared)");
  check_mpi(MPI_Comm_rank(local, &info_.local_rank), "MPI_Comm_rank(local)");
  check_mpi(MPI_Comm_size(local, &info_.local_world_size), "MPI_Comm_size(local)");
  MPI_Comm_free(&local);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  info_.hostname.assign(name, len);

  set_log_rank(info_.rank, info_.world_size);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    VIT_THROW(CommError, "the MPI library gives thread level ", provided,
              " but vitrain needs at least MPI_THREAD_SERIALIZED; use an Open MPI built with threads");
  }
  if (!thread_multiple_) {
    log_warn("MPI gives MPI_THREAD_SERIALIZED, not MULTIPLE; fine for CPU training, and the NCCL "
             "watchdog's MPI_Abort is best effort");
  }
}

Runtime::~Runtime() {
  if (mpi_live()) {
    MPI_Finalize();
  }
}

void Runtime::abort_job(int code, bool abort_communicators) {
  std::vector<std::function<void()>> to_run;
  if (abort_communicators) {
    // Bounded wait: abort may be called while another thread holds the lock and is itself stuck;
    // then the hooks are skipped (reading the map unlocked would race with its writers).
    std::unique_lock<std::timed_mutex> lock(hooks_mutex(), std::chrono::seconds(1));
    if (lock.owns_lock()) {
      for (auto& [id, hook] : hooks()) to_run.push_back(hook);
    }
  }
  for (auto& hook : to_run) {
    try {
      hook();
    } catch (...) {
    }
  }
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_live()) {
    MPI_Abort(MPI_COMM_WORLD, code == 0 ? 1 : code);
  }
  std::_Exit(code == 0 ? 1 : code);
}

bool Runtime::same_on_every_rank(int64_t value, double timeout_s) const {
  if (info_.world_size == 1 || !mpi_live()) return true;
  int64_t send[2] = {value, -value}, max_and_minus_min[2] = {0, 0};  // one MAX gives both ends
  MPI_Request request;
  check_mpi(MPI_Iallreduce(send, max_and_minus_min, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD, &request),
            "MPI_Iallreduce (agreement)");
  wait_until_done(request, timeout_s, "MPI_Test (agreement)",
                  str("rank ", info_.rank, ": no answer from the other ranks within ", timeout_s,
                      " s at start-up (a peer hung, or runs another program?)"));
  return max_and_minus_min[0] == -max_and_minus_min[1];
}

torch::Device select_device(const LaunchInfo& info) {
  if (!torch::cuda::is_available()) {
    return torch::Device(torch::kCPU);
  }
  const int count = static_cast<int>(torch::cuda::device_count());
  if (info.local_world_size > count) {
    log_warn("host ", info.hostname, " runs ", info.local_world_size, " ranks but has ", count,
             " GPUs; ranks share GPUs (NCCL refuses two ranks on one GPU: start at most one rank per GPU)");
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(info.local_rank % count));
}

namespace detail {

int add_abort_hook(std::function<void()> hook) {
  static int next_id = 0;
  std::lock_guard<std::timed_mutex> lock(hooks_mutex());
  const int id = next_id++;
  hooks()[id] = std::move(hook);
  return id;
}

void remove_abort_hook(int id) {
  std::lock_guard<std::timed_mutex> lock(hooks_mutex());
  hooks().erase(id);
}

void bootstrap_broadcast(void* data, size_t bytes, int root, double timeout_s, const char* what) {
  VIT_CHECK(mpi_live(), CommError, "bootstrap of ", what, ": MPI is not initialised (create a vit::dist::Runtime first)");
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Request request;
  check_mpi(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &request),
            "MPI_Ibcast (bootstrap)");
  wait_until_done(request, timeout_s, "MPI_Test (bootstrap)",
                  str("bootstrap broadcast of ", what, " timed out after ", timeout_s, " s on rank ", rank,
                      " (a peer hung or died?)"));
}

}  // namespace detail
}  // namespace vit::dist

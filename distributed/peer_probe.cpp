// PeerProbe: the responder thread and the query of Note [Naming a hung peer] (peer_probe.h).
#include "distributed/peer_probe.h"

#include <mpi.h>

#include <chrono>
#include <vector>

#include "core/strings.h"

namespace vit::dist {
namespace {
constexpr int kQueryTag = 7101;
constexpr int kReplyTag = 7102;
}  // namespace

struct PeerProbe::Comm {
  MPI_Comm comm = MPI_COMM_NULL;
};

PeerProbe::PeerProbe() : comm_(std::make_unique<Comm>()) {
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  enabled_ = provided >= MPI_THREAD_MULTIPLE;
  if (!enabled_) return;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm_->comm);
  MPI_Comm_set_errhandler(comm_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_->comm, &rank_);
  MPI_Comm_size(comm_->comm, &world_size_);
  responder_ = std::thread([this] { serve(); });
}

PeerProbe::~PeerProbe() {
  if (!enabled_) return;
  stop_ = true;
  responder_.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_->comm);
}

void PeerProbe::serve() {
  uint64_t query = 0;
  MPI_Request request;
  MPI_Irecv(&query, 1, MPI_UINT64_T, MPI_ANY_SOURCE, kQueryTag, comm_->comm, &request);
  while (!stop_) {
    int done = 0;
    MPI_Status status;
    if (MPI_Test(&request, &done, &status) != MPI_SUCCESS) return;
    if (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    const uint64_t reply = issued_;
    MPI_Send(&reply, 1, MPI_UINT64_T, status.MPI_SOURCE, kReplyTag, comm_->comm);
    MPI_Irecv(&query, 1, MPI_UINT64_T, MPI_ANY_SOURCE, kQueryTag, comm_->comm, &request);
  }
  MPI_Cancel(&request);
  MPI_Wait(&request, MPI_STATUS_IGNORE);
}

std::string PeerProbe::diagnose(uint64_t seq, double wait_s) {
  if (!enabled_) return "";
  // Heap buffers, deliberately leaked: a dead peer's requests never complete, and the job is
  // about to abort anyway.
  auto* query = new uint64_t(seq);
  auto* replies = new std::vector<uint64_t>(world_size_, 0);
  auto* requests = new std::vector<MPI_Request>(2 * world_size_, MPI_REQUEST_NULL);
  for (int peer = 0; peer < world_size_; ++peer) {
    if (peer == rank_) continue;
    MPI_Isend(query, 1, MPI_UINT64_T, peer, kQueryTag, comm_->comm, &(*requests)[2 * peer]);
    MPI_Irecv(&(*replies)[peer], 1, MPI_UINT64_T, peer, kReplyTag, comm_->comm, &(*requests)[2 * peer + 1]);
  }
  std::vector<bool> answered(world_size_, false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_s);
  int pending = world_size_ - 1;
  while (pending > 0 && std::chrono::steady_clock::now() < deadline) {
    for (int peer = 0; peer < world_size_; ++peer) {
      if (peer == rank_ || answered[peer]) continue;
      int done = 0;
      MPI_Test(&(*requests)[2 * peer + 1], &done, MPI_STATUS_IGNORE);
      if (done) {
        answered[peer] = true;
        --pending;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<std::string> behind, silent;
  for (int peer = 0; peer < world_size_; ++peer) {
    if (peer == rank_) continue;
    if (!answered[peer]) {
      silent.push_back(std::to_string(peer));
    } else if ((*replies)[peer] < seq) {
      behind.push_back(str("rank ", peer, " has not started it (its last collective is #", (*replies)[peer], ")"));
    }
  }
  std::string text = join(behind, "; ");
  if (!silent.empty()) {
    text += str(text.empty() ? "" : "; ", "rank(s) ", join(silent, ", "),
                " did not answer within ", wait_s, " s (dead, or stuck inside MPI)");
  }
  if (text.empty()) text = "every peer has started it (a peer may be stuck inside it, or a different collective was called)";
  return text;
}

}  // namespace vit::dist

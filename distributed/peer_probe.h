// PeerProbe: names the peer a timed-out MPI collective is waiting for.
//
// Note [Naming a hung peer]
// When rank 0's allreduce #17 times out, the useful message is "rank 1 has not started
// allreduce #17", but the hung rank cannot take part in any collective. So every rank runs a
// small responder thread on a private duplicate of MPI_COMM_WORLD: it sleeps, polls a posted
// receive every 20 ms, and answers a query with the sequence number of the last collective its
// communicator issued. The rank that timed out queries every peer and waits up to one second:
// a peer answering with a smaller number has not reached the collective (it hangs elsewhere);
// a peer not answering is dead or stuck inside MPI. Needs MPI_THREAD_MULTIPLE; without it the
// probe stays off and the timeout message names only the waiting rank.
// Created collectively (MPI_Comm_dup) by every rank, in the same order as its communicator.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace vit::dist {

class PeerProbe {
 public:
  PeerProbe();   // collective over MPI_COMM_WORLD
  ~PeerProbe();  // stops the responder
  PeerProbe(const PeerProbe&) = delete;
  PeerProbe& operator=(const PeerProbe&) = delete;

  bool enabled() const { return enabled_; }
  void note_issued(uint64_t seq) { issued_ = seq; }
  // "rank 1 has not started it (its last collective is #16); rank 2 did not answer ..." about
  // collective `seq` of this communicator. Waits at most `wait_s`. Called after a timeout only.
  std::string diagnose(uint64_t seq, double wait_s = 1.0);

 private:
  void serve();

  struct Comm;  // the MPI communicator, kept out of this header
  std::unique_ptr<Comm> comm_;
  bool enabled_ = false;
  int rank_ = 0;
  int world_size_ = 1;
  std::atomic<uint64_t> issued_{0};
  std::atomic<bool> stop_{false};
  std::thread responder_;
};

}  // namespace vit::dist

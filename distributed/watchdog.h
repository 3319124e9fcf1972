// Watchdog: a thread that watches in-flight collectives whose completion the host never waits
// for (NCCL work is only ordered on streams) and reports the first one that exceeds a timeout,
// or an asynchronous error, exactly once. Backend-neutral: the backend supplies how to ask
// "done?" (e.g. cudaEventQuery) and what to do on failure (NCCL: log, ncclCommAbort,
// Runtime::abort_job). The MPI backend needs none: its wait() polls with a deadline itself.
//
// A query can itself block: a CUDA event query waits on the driver while another thread of the
// process sits in a launch that waits for room in a stream stuck behind a collective whose peer
// hung (a CUDA graph lets the host run far ahead); so can destroying a finished entry (its
// event) and reporting a failure (ncclCommAbort). So nothing that may block runs under the
// watchdog's lock, and a second thread, the guard, makes no device calls and takes no lock the
// watchdog thread holds while blocked: it reports a query or entry destruction blocked for longer
// than the timeout through `on_blocked`, and calls `on_blocked` too when reporting a failure has
// taken longer than the timeout. `on_blocked` must not call into the device (the NCCL backend
// ends the job without ncclCommAbort there).
//
// Each entry's time counts from when it was tracked or when the entry before it completed,
// whichever is later: work queued behind other work (a host far ahead of its GPU) is not timed
// while it waits its turn.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace vit::dist {

class Watchdog {
 public:
  // `is_done` polls from the watchdog thread must be thread-safe. `async_error` (may be empty)
  // returns "" while healthy, else a description. `on_failure(message)` runs on the watchdog
  // thread, at most once; it usually does not return (abort_job). `on_blocked` (null: use
  // on_failure) runs on the guard thread, see above.
  Watchdog(double timeout_s, std::function<std::string()> async_error,
           std::function<void(const std::string&)> on_failure,
           std::chrono::milliseconds poll_interval = std::chrono::milliseconds(100),
           std::function<void(const std::string&)> on_blocked = nullptr);
  ~Watchdog();  // stops and joins the threads; pending entries are dropped
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Starts timing `what` now. Thread-safe; cheap (a lock and a push).
  void track(std::string what, std::function<bool()> is_done);
  size_t num_pending() const;
  bool failed() const { return failed_; }

 private:
  struct Entry {
    std::string what;
    std::chrono::steady_clock::time_point start;
    std::function<bool()> is_done;
  };
  void run();
  void guard();
  void fail(const std::function<void(const std::string&)>& report, const std::string& message);
  void set_busy(const std::string& what);  // a call that may block starts
  void clear_busy();

  double timeout_s_;
  std::function<std::string()> async_error_;
  std::function<void(const std::string&)> on_failure_;
  std::chrono::milliseconds poll_interval_;
  // The end of the watchdog's last round (from construction: the thread may start late).
  std::chrono::steady_clock::time_point last_round_ = std::chrono::steady_clock::now();
  std::function<void(const std::string&)> on_blocked_;
  mutable std::mutex mutex_;  // pending_; never held across a call that may block
  std::condition_variable wake_;
  std::deque<Entry> pending_;  // in issue order: the oldest is the first to time out
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  // Steady-clock nanoseconds since which the watchdog thread is inside a call that may block
  // (a query, an entry's destruction) or a failure is being reported; 0 when not.
  std::atomic<int64_t> busy_since_ns_{0};
  std::atomic<int64_t> reporting_since_ns_{0};
  std::mutex busy_mutex_;  // busy_what_ only (held for a string copy)
  std::string busy_what_;
  std::mutex guard_mutex_;  // the guard's sleep only
  std::condition_variable guard_wake_;
  std::thread thread_;
  std::thread guard_;
};

}  // namespace vit::dist

// Watchdog: a thread that watches in-flight collectives whose completion the host never waits
// for (NCCL work is only ordered on streams) and reports the first one that exceeds a timeout,
// or an asynchronous error, exactly once. Backend-neutral: the backend supplies how to ask
// "done?" (e.g. cudaEventQuery) and what to do on failure (NCCL: log, ncclCommAbort,
// Runtime::abort_job). The MPI backend needs none: its wait() polls with a deadline itself.
//
// A query can itself block: a CUDA event query waits on the driver while another thread of the
// process sits in a launch that waits for room in a stream stuck behind a collective whose peer
// hung (a CUDA graph lets the host run far ahead). So a second thread, the guard, makes no
// device calls and reports a query blocked for longer than the timeout through `on_blocked`
// (which must not call into the device either: the NCCL backend skips ncclCommAbort there).
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
  // thread, at most once; it usually does not return (abort_job).
  Watchdog(double timeout_s, std::function<std::string()> async_error,
           std::function<void(const std::string&)> on_failure,
           std::chrono::milliseconds poll_interval = std::chrono::milliseconds(100),
           std::function<void(const std::string&)> on_blocked = nullptr);  // null: on_failure
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

  double timeout_s_;
  std::function<std::string()> async_error_;
  std::function<void(const std::string&)> on_failure_;
  std::chrono::milliseconds poll_interval_;
  std::function<void(const std::string&)> on_blocked_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Entry> pending_;  // in issue order: the oldest is the first to time out
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  // Steady-clock nanoseconds when the running query started; 0 while not querying.
  std::atomic<int64_t> query_started_ns_{0};
  std::string querying_;  // what the running query is about (under mutex_)
  std::thread thread_;
  std::thread guard_;
};

}  // namespace vit::dist

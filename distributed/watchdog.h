// Watchdog: a thread that watches in-flight collectives whose completion the host never waits
// for (NCCL work is only ordered on streams) and reports the first one that exceeds a timeout,
// or an asynchronous error, exactly once. Backend-neutral: the backend supplies how to ask
// "done?" (e.g. cudaEventQuery) and what to do on failure (NCCL: log, ncclCommAbort,
// Runtime::abort_job). The MPI backend needs none: its wait() polls with a deadline itself.
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
           std::chrono::milliseconds poll_interval = std::chrono::milliseconds(100));
  ~Watchdog();  // stops and joins the thread; pending entries are dropped
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

  double timeout_s_;
  std::function<std::string()> async_error_;
  std::function<void(const std::string&)> on_failure_;
  std::chrono::milliseconds poll_interval_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Entry> pending_;  // in issue order: the oldest is the first to time out
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

}  // namespace vit::dist

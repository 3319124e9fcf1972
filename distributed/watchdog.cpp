// Watchdog thread: polls in-flight work every poll interval, drops what completed, and reports
// the oldest entry older than the timeout (or an asynchronous backend error) once. The guard
// thread reports a query that itself blocks (see watchdog.h).
#include "distributed/watchdog.h"

#include <algorithm>

#include "core/strings.h"

namespace vit::dist {

Watchdog::Watchdog(double timeout_s, std::function<std::string()> async_error,
                   std::function<void(const std::string&)> on_failure,
                   std::chrono::milliseconds poll_interval, std::function<void(const std::string&)> on_blocked)
    : timeout_s_(timeout_s),
      async_error_(std::move(async_error)),
      on_failure_(std::move(on_failure)),
      poll_interval_(poll_interval),
      on_blocked_(on_blocked ? std::move(on_blocked) : on_failure_),
      thread_([this] { run(); }),
      guard_([this] { guard(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  {
    std::lock_guard<std::mutex> lock(guard_mutex_);
  }
  guard_wake_.notify_all();
  thread_.join();
  guard_.join();
}

void Watchdog::track(std::string what, std::function<bool()> is_done) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.push_back(Entry{std::move(what), std::chrono::steady_clock::now(), std::move(is_done)});
}

size_t Watchdog::num_pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void Watchdog::set_busy(const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(busy_mutex_);
    busy_what_ = what;
  }
  busy_since_ns_ = now_ns();
}

void Watchdog::clear_busy() { busy_since_ns_ = 0; }

void Watchdog::fail(const std::function<void(const std::string&)>& report, const std::string& message) {
  if (failed_.exchange(true)) return;  // once, from whichever thread sees a failure first
  reporting_since_ns_ = now_ns();
  report(message);
  reporting_since_ns_ = 0;
}

void Watchdog::run() {
  const auto timeout = std::chrono::duration<double>(timeout_s_);
  while (!stop_ && !failed_) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, poll_interval_, [this] { return stop_.load(); });
      if (stop_) return;
    }
    // Work completes in issue order on one stream: stop at the first entry still running.
    while (true) {
      std::function<bool()> query;
      std::string what;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (pending_.empty()) break;
        query = pending_.front().is_done;
        what = pending_.front().what;
      }
      set_busy(what);
      if (!query()) {
        clear_busy();
        break;
      }
      Entry finished;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        finished = std::move(pending_.front());
        pending_.pop_front();
        // The next entry could only start now: its time counts from here.
        if (!pending_.empty()) pending_.front().start = std::max(pending_.front().start, std::chrono::steady_clock::now());
      }
      query = nullptr;  // destroyed outside the lock, still watched (an event's destruction may block)
      finished = Entry{};
      clear_busy();
    }
    std::string failure;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto now = std::chrono::steady_clock::now();
      // Since the end of the last round: a poll interval and some queries, unless this process did
      // not run meanwhile (SIGSTOP, a debugger, a frozen machine). Then its own collectives look
      // late, but it is the rank that stopped answering, and its peers have said so: report that,
      // not a timeout that blames them.
      const double stalled = std::chrono::duration<double>(now - last_round_).count();
      last_round_ = now;
      if (!pending_.empty() && now - pending_.front().start > timeout) {
        const double age = std::chrono::duration<double>(now - pending_.front().start).count();
        if (stalled > timeout_s_ / 2 && stalled > 10 * std::chrono::duration<double>(poll_interval_).count()) {
          failure = str("this rank did not run for ", stalled, " s (stopped: SIGSTOP, a debugger or a frozen ",
                        "machine), longer than distributed.timeout_s (", timeout_s_,
                        " s): it is the rank its peers waited for");
        } else {
          failure = str(pending_.front().what, " did not complete within ", timeout_s_, " s (running for ", age,
                        " s; distributed.timeout_s; ", pending_.size(),
                        " collective(s) pending; a peer hung, died, or called collectives in a different order)");
        }
      }
    }
    if (failure.empty() && async_error_) {
      set_busy("the backend's asynchronous error state");
      failure = async_error_();
      clear_busy();
    }
    if (!failure.empty()) {
      fail(on_failure_, failure);
      return;
    }
  }
}

void Watchdog::guard() {
  const auto limit_ns = static_cast<int64_t>(timeout_s_ * 1e9);
  bool escalated = false;
  while (!stop_) {
    {
      std::unique_lock<std::mutex> lock(guard_mutex_);
      guard_wake_.wait_for(lock, poll_interval_, [this] { return stop_.load(); });
    }
    if (stop_) return;
    const int64_t busy = busy_since_ns_, reporting = reporting_since_ns_;
    if (!failed_ && busy != 0 && now_ns() - busy > limit_ns) {
      std::string what;
      {
        std::lock_guard<std::mutex> lock(busy_mutex_);
        what = busy_what_;
      }
      fail(on_blocked_, str("the watchdog's call on ", what, " has itself blocked for more than ", timeout_s_,
                            " s (distributed.timeout_s): the device does not progress, most likely stuck in a "
                            "collective whose peer hung or died"));
    } else if (!escalated && reporting != 0 && now_ns() - reporting > limit_ns) {
      escalated = true;
      on_blocked_(str("reporting a failure (aborting the communicator) has itself blocked for more than ", timeout_s_,
                      " s; ending the job without further clean-up"));
    }
  }
}

}  // namespace vit::dist

// Watchdog thread: polls in-flight work every poll interval, drops what completed, and reports
// the oldest entry older than the timeout (or an asynchronous backend error) once. The guard
// thread reports a query that itself blocks (see watchdog.h).
#include "distributed/watchdog.h"

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

void Watchdog::fail(const std::function<void(const std::string&)>& report, const std::string& message) {
  if (failed_.exchange(true)) return;  // once, from whichever thread sees a failure first
  report(message);
}

void Watchdog::run() {
  const auto timeout = std::chrono::duration<double>(timeout_s_);
  while (!stop_ && !failed_) {
    std::string failure;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, poll_interval_, [this] { return stop_.load(); });
      if (stop_) return;
      // Work completes in issue order on one stream: stop at the first entry still running.
      // Queries run unlocked (they may block, see watchdog.h); only this thread pops, and
      // push_back keeps references to deque elements valid.
      while (!pending_.empty()) {
        Entry& front = pending_.front();
        querying_ = front.what;
        lock.unlock();
        query_started_ns_ = now_ns();
        const bool done = front.is_done();
        query_started_ns_ = 0;
        lock.lock();
        if (!done) break;
        pending_.pop_front();
      }
      const auto now = std::chrono::steady_clock::now();
      if (!pending_.empty() && now - pending_.front().start > timeout) {
        const double age = std::chrono::duration<double>(now - pending_.front().start).count();
        failure = str(pending_.front().what, " did not complete within ", timeout_s_,
                      " s (running for ", age, " s; distributed.timeout_s; ", pending_.size(),
                      " collective(s) pending; a peer hung, died, or called collectives in a different order)");
      }
    }
    if (failure.empty() && async_error_) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        querying_ = "the backend's asynchronous error state";
      }
      query_started_ns_ = now_ns();
      failure = async_error_();
      query_started_ns_ = 0;
    }
    if (!failure.empty()) {
      fail(on_failure_, failure);
      return;
    }
  }
}

void Watchdog::guard() {
  const auto limit_ns = static_cast<int64_t>(timeout_s_ * 1e9);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_ && !failed_) {
    wake_.wait_for(lock, poll_interval_, [this] { return stop_.load(); });
    const int64_t started = query_started_ns_;
    if (stop_ || started == 0 || now_ns() - started <= limit_ns) continue;
    const std::string message =
        str("the watchdog's query of ", querying_,
            " has itself blocked for more than ", timeout_s_,
            " s (distributed.timeout_s): the device does not progress, most likely stuck in a collective "
            "whose peer hung or died");
    lock.unlock();
    fail(on_blocked_, message);
    return;
  }
}

}  // namespace vit::dist

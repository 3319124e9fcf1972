// Watchdog thread: polls in-flight work every poll interval, drops what completed, and reports
// the oldest entry older than the timeout (or an asynchronous backend error) once.
#include "distributed/watchdog.h"

#include "core/strings.h"

namespace vit::dist {

Watchdog::Watchdog(double timeout_s, std::function<std::string()> async_error,
                   std::function<void(const std::string&)> on_failure,
                   std::chrono::milliseconds poll_interval)
    : timeout_s_(timeout_s),
      async_error_(std::move(async_error)),
      on_failure_(std::move(on_failure)),
      poll_interval_(poll_interval),
      thread_([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::track(std::string what, std::function<bool()> is_done) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.push_back(Entry{std::move(what), std::chrono::steady_clock::now(), std::move(is_done)});
}

size_t Watchdog::num_pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
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
      while (!pending_.empty() && pending_.front().is_done()) pending_.pop_front();
      const auto now = std::chrono::steady_clock::now();
      if (!pending_.empty() && now - pending_.front().start > timeout) {
        const double age = std::chrono::duration<double>(now - pending_.front().start).count();
        failure = str(pending_.front().what, " did not complete within ", timeout_s_,
                      " s (running for ", age, " s; distributed.timeout_s; ", pending_.size(),
                      " collective(s) pending; a peer hung, died, or called collectives in a different order)");
      }
    }
    if (failure.empty() && async_error_) failure = async_error_();
    if (!failure.empty()) {
      failed_ = true;
      on_failure_(failure);
      return;
    }
  }
}

}  // namespace vit::dist

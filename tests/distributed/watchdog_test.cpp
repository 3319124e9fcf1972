// Watchdog: completed work is dropped; stuck work is reported once, after the timeout and not
// long after; asynchronous errors are reported; a completion query that itself blocks is
// reported by the guard thread. A rank that was itself stopped blames itself, not its peers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <chrono>
#include <thread>

#include "distributed/watchdog.h"

namespace vit::dist {
namespace {

using namespace std::chrono_literals;

TEST(Watchdog, DropsCompletedWork) {
  std::atomic<int> failures{0};
  Watchdog dog(0.2, nullptr, [&](const std::string&) { ++failures; }, 10ms);
  std::atomic<bool> done{false};
  dog.track("allreduce #1", [&] { return done.load(); });
  std::this_thread::sleep_for(50ms);
  done = true;
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(dog.num_pending(), 0u);
}

TEST(Watchdog, ReportsStuckWorkOnceAfterTimeout) {
  std::atomic<int> failures{0};
  std::string message;
  std::atomic<double> reported_after{0.0};
  const auto start = std::chrono::steady_clock::now();
  Watchdog dog(0.3, nullptr, [&](const std::string& m) {
    message = m;
    reported_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++failures;
  }, 10ms);
  dog.track("allreduce #7 on rank 3", [] { return false; });
  std::this_thread::sleep_for(800ms);
  EXPECT_EQ(failures, 1);
  EXPECT_TRUE(dog.failed());
  EXPECT_GE(reported_after, 0.3);
  EXPECT_LT(reported_after, 0.6);
  EXPECT_NE(message.find("allreduce #7 on rank 3"), std::string::npos) << message;
}

TEST(Watchdog, ReportsAsyncError) {
  std::atomic<int> failures{0};
  std::string message;
  Watchdog dog(100.0, [] { return std::string("NCCL asynchronous error: remote process exited"); },
               [&](const std::string& m) {
                 message = m;
                 ++failures;
               }, 10ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(failures, 1);
  EXPECT_NE(message.find("remote process exited"), std::string::npos);
}

TEST(Watchdog, GuardReportsAQueryThatBlocks) {
  std::atomic<int> failures{0}, blocked{0};
  std::string message;
  std::atomic<double> reported_after{0.0};
  const auto start = std::chrono::steady_clock::now();
  std::atomic<bool> release{false};
  {
    Watchdog dog(
        0.3, nullptr, [&](const std::string&) { ++failures; }, 10ms,
        [&](const std::string& m) {
          message = m;
          reported_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          ++blocked;
        });
    // As cudaEventQuery waiting on the driver while another thread waits in a launch.
    dog.track("CUDA graph replay of step 9", [&] {
      while (!release) std::this_thread::sleep_for(1ms);
      return false;
    });
    // Tracking goes on while the query blocks (no lock is held across it).
    for (int i = 0; i < 100; ++i) dog.track("later", [] { return true; });
    std::this_thread::sleep_for(1200ms);
    EXPECT_EQ(blocked, 1);
    EXPECT_EQ(failures, 0);
    EXPECT_TRUE(dog.failed());
    EXPECT_GE(reported_after, 0.3);
    EXPECT_LT(reported_after, 1.1);
    EXPECT_NE(message.find("CUDA graph replay of step 9"), std::string::npos) << message;
    EXPECT_NE(message.find("blocked"), std::string::npos) << message;
    release = true;  // lets the destructor join the watchdog thread
  }
  EXPECT_EQ(failures, 0);  // reported once, by the guard only
}

// Dropping a completed entry releases its event, which can block on the driver like a query.
struct BlocksWhenDestroyed {
  explicit BlocksWhenDestroyed(std::atomic<bool>* r) : release(r) {}
  std::atomic<bool>* release;
  ~BlocksWhenDestroyed() {
    while (!*release) std::this_thread::sleep_for(1ms);
  }
};

TEST(Watchdog, GuardReportsAnEntryWhoseDestructionBlocks) {
  std::atomic<int> blocked{0};
  std::atomic<bool> release{false};
  {
    Watchdog dog(0.3, nullptr, [](const std::string&) {}, 10ms, [&](const std::string&) { ++blocked; });
    {
      auto holder = std::make_shared<BlocksWhenDestroyed>(&release);
      dog.track("allreduce #3", [holder] { return true; });
    }
    std::this_thread::sleep_for(1200ms);
    EXPECT_EQ(blocked, 1);
    release = true;
  }
}

// ncclCommAbort waiting on a stuck device: the guard ends the job anyway.
TEST(Watchdog, GuardEscalatesAReportThatBlocks) {
  std::atomic<int> failures{0}, blocked{0};
  std::string message;
  std::atomic<bool> release{false};
  {
    Watchdog dog(
        0.3, nullptr,
        [&](const std::string&) {
          ++failures;
          while (!release) std::this_thread::sleep_for(1ms);
        },
        10ms,
        [&](const std::string& m) {
          message = m;
          ++blocked;
        });
    dog.track("allreduce #5", [] { return false; });
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(failures, 1);
    EXPECT_EQ(blocked, 1);
    EXPECT_NE(message.find("reporting a failure"), std::string::npos) << message;
    release = true;
  }
}

// Work queued behind other work is timed from when the work before it completed.
TEST(Watchdog, TimesEachEntryFromWhenItsPredecessorCompleted) {
  std::atomic<int> failures{0};
  std::atomic<bool> first_done{false};
  Watchdog dog(0.4, nullptr, [&](const std::string&) { ++failures; }, 10ms);
  dog.track("replay of step 1", [&] { return first_done.load(); });
  dog.track("replay of step 2", [] { return false; });
  std::this_thread::sleep_for(300ms);
  first_done = true;  // step 2 waited 0.3 s behind step 1, then runs on
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(failures, 0) << "step 2 was timed while it waited behind step 1";
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(failures, 1);
}

// A process stopped (SIGSTOP) for longer than the timeout finds its collective late when it runs
// again; it must say that it was the one not running, not that its peers hung.
TEST(Watchdog, ARankThatWasStoppedBlamesItself) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    std::atomic<bool> reported{false};
    Watchdog dog(0.5, nullptr, [&](const std::string& m) {
      (void)!::write(pipe_fds[1], m.data(), m.size());
      reported = true;
    }, 10ms);
    dog.track("allreduce #3", [] { return false; });
    (void)!::write(pipe_fds[1], "R", 1);  // tracked: the parent may stop us now
    for (int i = 0; i < 500 && !reported; ++i) std::this_thread::sleep_for(10ms);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  char ready = 0;
  ASSERT_EQ(::read(pipe_fds[0], &ready, 1), 1);
  ::kill(child, SIGSTOP);
  std::this_thread::sleep_for(1500ms);
  ::kill(child, SIGCONT);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) message.append(buf, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_NE(message.find("this rank did not run for"), std::string::npos) << message;
  EXPECT_EQ(message.find("a peer hung"), std::string::npos) << message;
}

}  // namespace
}  // namespace vit::dist

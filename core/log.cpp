#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace vit {
namespace {
int g_rank = 0;
int g_world_size = 1;
std::mutex g_mutex;
}  // namespace

void set_log_rank(int rank, int world_size) {
  g_rank = rank;
  g_world_size = world_size;
}

void log_line(const char* level, bool all_ranks, const std::string& message) {
  if (!all_ranks && g_rank != 0) return;
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(g_mutex);
  FILE* out = (level[0] == 'i') ? stdout : stderr;
  if (g_world_size > 1) {
    std::fprintf(out, "[%s %s rank %d] %s\n", stamp, level, g_rank, message.c_str());
  } else {
    std::fprintf(out, "[%s %s] %s\n", stamp, level, message.c_str());
  }
  std::fflush(out);
}

}  // namespace vit

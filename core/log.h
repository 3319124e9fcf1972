// Rank-aware logging. Every line carries a timestamp and, in multi-process jobs, the rank.
// `log_info` prints on rank 0 only (progress, summaries); `log_warn` and `log_error` print on
// every rank, because a warning on rank 3 is exactly what a user needs to see.
#pragma once

#include <string>

#include "core/strings.h"

namespace vit {

// Set once at start-up, after the launch environment is known.
void set_log_rank(int rank, int world_size);

void log_line(const char* level, bool all_ranks, const std::string& message);

template <typename... Args>
void log_info(const Args&... args) {
  log_line("info", false, str(args...));
}
template <typename... Args>
void log_warn(const Args&... args) {
  log_line("warn", true, str(args...));
}
template <typename... Args>
void log_error(const Args&... args) {
  log_line("error", true, str(args...));
}

}  // namespace vit

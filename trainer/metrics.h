// What a run reports: metrics.jsonl (one JSON object per line), TensorBoard scalars under tb/,
// and progress on the terminal (a live bar on a TTY, periodic plain lines otherwise).
// Only rank 0 writes; other ranks construct it disabled. Values arrive already reduced over
// ranks: this file does no communication. Nothing is written before open(): a run refused at
// start-up leaves run.dir as it was. Every write is checked: a failed one (a full disk) stops the
// run with an IoError rather than losing records silently.
#pragma once

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "core/json.h"
#include "trainer/tensorboard.h"

namespace vit::train {

// The YAML section `logging` (trainer/config.h loads it; docs/config.md lists the keys).
struct LoggingConfig {
  int64_t every_steps = 50;
  bool tensorboard = true;
  std::string progress = "auto";  // auto (bar on a terminal, lines otherwise) | bar | lines
  int64_t profile_step = 0;       // > 0: profile 5 steps from this one (trace + top kernels)
};
// Range and choice checks of the section alone; messages name `logging.<key>` (ConfigError).
void validate(const LoggingConfig& config);

class MetricsLog {
 public:
  MetricsLog(const std::string& run_dir, const LoggingConfig& config, bool enabled, int64_t total_steps);
  ~MetricsLog();

  // Opens metrics.jsonl and tb/ for appending, the run being at `step` (0, or the step of the
  // checkpoint it resumed from). Records of later steps (written after that checkpoint, before a
  // crash) and a torn last line (a write cut by a crash or a full disk) are cut first, so
  // metrics.jsonl holds each step once and every line is whole.
  void open(int64_t step);

  // A train line: {"split":"train","step","epoch","loss","lr","grad_norm","img_per_s",...}.
  void train(const Json& line);
  // An eval line: {"split":"eval","step","loss","accuracy",...}.
  void eval(const Json& line);
  // Plain message that does not disturb the bar.
  void message(const std::string& text);
  void finish();

 private:
  void append(const Json& line);
  void draw_bar(const Json& line);
  bool enabled_;
  bool tensorboard_;
  bool bar_;
  std::string run_dir_;
  std::string path_;
  int64_t total_steps_;
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
  std::chrono::steady_clock::time_point start_;
  bool bar_drawn_ = false;
};

}  // namespace vit::train

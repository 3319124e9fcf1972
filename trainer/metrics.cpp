#include "trainer/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/errors.h"
#include "core/files.h"
#include "core/log.h"
#include "core/strings.h"

namespace vit::train {

MetricsLog::MetricsLog(const std::string& run_dir, const LoggingConfig& config, bool enabled, int64_t total_steps)
    : enabled_(enabled),
      tensorboard_(config.tensorboard),
      run_dir_(run_dir),
      path_(run_dir + "/metrics.jsonl"),
      total_steps_(total_steps),
      start_(std::chrono::steady_clock::now()) {
  // mpirun hands every rank a pseudo-terminal even when its own output goes to a file, so a
  // terminal is only believed outside it.
  const bool terminal = isatty(STDOUT_FILENO) && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr;
  bar_ = config.progress == "bar" || (config.progress == "auto" && terminal);
}

MetricsLog::~MetricsLog() {
  try {
    finish();
  } catch (const Error&) {  // already failing: the error that stopped the run is the one to report
  }
}

namespace {

// The lines of metrics.jsonl a run at `step` keeps: whole lines of steps <= step.
std::string kept_records(const std::string& text, int64_t step, int64_t& cut, bool& torn) {
  std::string kept;
  size_t begin = 0;
  torn = false;
  cut = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    if (end == std::string::npos) {
      torn = true;  // no newline: the last write did not finish
      break;
    }
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    int64_t line_step = -1;
    try {
      line_step = Json::parse(line).at("step").get<int64_t>();
    } catch (const std::exception&) {
      line_step = -1;  // not a record of ours: cut
    }
    if (line_step < 0 || line_step > step) {
      ++cut;
      continue;
    }
    kept += line;
    kept += '\n';
  }
  return kept;
}

}  // namespace

void MetricsLog::open(int64_t step) {
  if (!enabled_ || jsonl_.is_open()) return;
  std::filesystem::create_directories(run_dir_);
  if (std::filesystem::exists(path_)) {
    const std::string text = read_file(path_);
    int64_t cut = 0;
    bool torn = false;
    const std::string kept = kept_records(text, step, cut, torn);
    if (kept.size() != text.size()) {
      write_file_atomic(path_, kept);
      log_warn(path_, ": cut ", cut, " record(s) of steps after ", step, torn ? " and a torn last line" : "",
               " (written after the checkpoint this run resumes from, or cut by a crash or a full disk)");
    }
  }
  jsonl_.open(path_, std::ios::app);
  VIT_CHECK(jsonl_.good(), IoError, "cannot write '", path_, "': ", std::strerror(errno), "; check run.dir");
  if (tensorboard_) tb_ = std::make_unique<TensorBoardWriter>(run_dir_ + "/tb");
}

void MetricsLog::append(const Json& line) {
  open(0);  // no-op once open
  jsonl_ << line.dump() << '\n';
  jsonl_.flush();
  VIT_CHECK(jsonl_.good(), IoError, "writing '", path_, "' failed (", std::strerror(errno),
            "; disk full?); the run stops here, its last checkpoint intact: free space and re-run the same "
            "command to resume (the torn line is cut then)");
  if (!tb_) return;
  const std::string split = line.at("split").get<std::string>();
  const int64_t step = line.at("step").get<int64_t>();
  for (const auto& [key, value] : line.items()) {
    if (key == "split" || key == "step" || !value.is_number()) continue;
    tb_->add_scalar(split + "/" + key, value.get<double>(), step);
  }
  tb_->flush();
}

void MetricsLog::draw_bar(const Json& line) {
  const int64_t step = line.at("step").get<int64_t>();
  const double frac = total_steps_ > 0 ? static_cast<double>(step) / static_cast<double>(total_steps_) : 0.0;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
  const int width = 30;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  std::printf("\r[%s] %3.0f%% step %lld/%lld loss %.4f %s img/s ETA %s   ", bar.c_str(), frac * 100,
              static_cast<long long>(step), static_cast<long long>(total_steps_), line.at("loss").get<double>(),
              format_count(line.at("img_per_s").get<double>()).c_str(), format_duration(eta).c_str());
  std::fflush(stdout);
  bar_drawn_ = true;
}

void MetricsLog::train(const Json& line) {
  if (!enabled_) return;
  append(line);
  if (bar_) {
    draw_bar(line);
    return;
  }
  log_info("step ", line.at("step").get<int64_t>(), "/", total_steps_, " epoch ", line.at("epoch").get<int64_t>(), " loss ",
           str(line.at("loss").get<double>()), " lr ", str(line.at("lr").get<double>()), " grad_norm ",
           str(line.at("grad_norm").get<double>()), " img/s ", format_count(line.at("img_per_s").get<double>()),
           " data_wait ", static_cast<int>(100 * line.at("data_wait").get<double>()), "%");
}

void MetricsLog::eval(const Json& line) {
  if (!enabled_) return;
  append(line);
  message(str("eval at step ", line.at("step").get<int64_t>(), ": loss ", line.at("loss").get<double>(), " accuracy ",
              100.0 * line.at("accuracy").get<double>(), "% (", line.at("samples").get<int64_t>(), " samples)"));
}

void MetricsLog::message(const std::string& text) {
  if (!enabled_) return;
  if (bar_drawn_) {
    std::printf("\n");
    bar_drawn_ = false;
  }
  log_info(text);
}

void MetricsLog::finish() {
  if (!enabled_) return;
  if (bar_drawn_) {
    std::printf("\n");
    std::fflush(stdout);
    bar_drawn_ = false;
  }
  if (tb_) tb_->flush();
}

void validate(const LoggingConfig& c) {
  VIT_CHECK(c.profile_step >= 0, ConfigError, "logging.profile_step: must be >= 0 (0 = off)");
  VIT_CHECK(c.every_steps > 0, ConfigError, "logging.every_steps: must be positive");
  VIT_CHECK(c.progress == "auto" || c.progress == "bar" || c.progress == "lines", ConfigError,
            "logging.progress: must be auto, bar or lines");
}

}  // namespace vit::train

#include "trainer/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/errors.h"
#include "core/log.h"
#include "core/strings.h"

namespace vit::train {

MetricsLog::MetricsLog(const std::string& run_dir, const LoggingConfig& config, bool enabled, int64_t total_steps)
    : enabled_(enabled), total_steps_(total_steps), start_(std::chrono::steady_clock::now()) {
  // mpirun hands every rank a pseudo-terminal even when its own output goes to a file, so a
  // terminal is only believed outside it.
  const bool terminal = isatty(STDOUT_FILENO) && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr;
  bar_ = config.progress == "bar" || (config.progress == "auto" && terminal);
  if (!enabled_) return;
  std::filesystem::create_directories(run_dir);
  std::string path = run_dir + "/metrics.jsonl";
  jsonl_.open(path, std::ios::app);
  VIT_CHECK(jsonl_.good(), DataError, "cannot write '", path, "'; check run.dir");
  if (config.tensorboard) tb_ = std::make_unique<TensorBoardWriter>(run_dir + "/tb");
}

MetricsLog::~MetricsLog() { finish(); }

void MetricsLog::append(const Json& line) {
  jsonl_ << line.dump() << '\n';
  jsonl_.flush();
  if (!tb_) return;
  const std::string split = line.at("split").as_string();
  const int64_t step = line.at("step").as_int();
  for (const auto& [key, value] : line.as_object()) {
    if (key == "split" || key == "step" || !value.is_number()) continue;
    tb_->add_scalar(split + "/" + key, value.as_double(), step);
  }
  tb_->flush();
}

void MetricsLog::draw_bar(const Json& line) {
  const int64_t step = line.at("step").as_int();
  const double frac = total_steps_ > 0 ? static_cast<double>(step) / static_cast<double>(total_steps_) : 0.0;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
  const int width = 30;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  std::printf("\r[%s] %3.0f%% step %lld/%lld loss %.4f %s img/s ETA %s   ", bar.c_str(), frac * 100,
              static_cast<long long>(step), static_cast<long long>(total_steps_), line.at("loss").as_double(),
              format_count(line.at("img_per_s").as_double()).c_str(), format_duration(eta).c_str());
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
  log_info("step ", line.at("step").as_int(), "/", total_steps_, " epoch ", line.at("epoch").as_int(), " loss ",
           str(line.at("loss").as_double()), " lr ", str(line.at("lr").as_double()), " grad_norm ",
           str(line.at("grad_norm").as_double()), " img/s ", format_count(line.at("img_per_s").as_double()),
           " data_wait ", static_cast<int>(100 * line.at("data_wait").as_double()), "%");
}

void MetricsLog::eval(const Json& line) {
  if (!enabled_) return;
  append(line);
  message(str("eval at step ", line.at("step").as_int(), ": loss ", line.at("loss").as_double(), " accuracy ",
              100.0 * line.at("accuracy").as_double(), "% (", line.at("samples").as_int(), " samples)"));
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

}  // namespace vit::train

// vit-train: the command-line entry point. Parses flags, loads the config, runs the Trainer.
// This is the only place that catches errors: it prints one line naming the rank, aborts the
// whole job when there are peers (so no rank hangs), and exits non-zero.
#include <boost/program_options.hpp>

#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "data/config.h"
#include "distributed/runtime.h"
#include "model/config.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

namespace po = boost::program_options;

namespace {

constexpr int kExitError = 1;

// Releases (leaks) the object when the scope is left by an exception.
template <typename T>
struct LeakOnError {
  std::unique_ptr<T>& owned;
  bool enabled;
  int uncaught = std::uncaught_exceptions();
  ~LeakOnError() {
    if (enabled && std::uncaught_exceptions() > uncaught) (void)owned.release();
  }
};
constexpr int kExitUsage = 2;

int run(int argc, char** argv, vit::dist::Runtime& runtime) {
  po::options_description flags(
      "vit-train: data-parallel Vision Transformer training\n\n"
      "Usage: [mpirun -np N] vit-train --config FILE [--set section.key=value ...]\n\nOptions");
  flags.add_options()                                                         //
      ("help,h", "show this help and exit")                                   //
      ("config,c", po::value<std::string>(), "experiment YAML file (see configs/)")  //
      ("set,s", po::value<std::vector<std::string>>()->composing(),
       "override one key, e.g. --set train.steps=100 (repeatable)")  //
      ("print-config", "print the resolved config (every key) and exit")  //
      ("dry-run", "validate the config, build the model, print its size and FLOPs, and exit");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, flags), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    VIT_THROW(vit::ConfigError, e.what(), "; run vit-train --help");
  }
  // Every rank in the same mode, agreed before any mode acts: a rank that printed its help and
  // finalised MPI would leave a training peer waiting forever in its first collective.
  const int mode = vm.count("help") ? 1 : vm.count("print-config") ? 2 : vm.count("dry-run") ? 3 : 4;
  VIT_CHECK(runtime.same_on_every_rank(mode), vit::ConfigError,
            "the ranks of this job were started in different modes (--help, --print-config, --dry-run or "
            "training); start every rank with the same flags");
  if (vm.count("help")) {
    if (runtime.info().rank == 0) std::cout << flags << "\n";
    return 0;
  }
  VIT_CHECK(vm.count("config"), vit::ConfigError, "missing --config FILE; e.g. vit-train --config configs/quickstart.yaml");
  std::vector<std::string> overrides;
  if (vm.count("set")) overrides = vm["set"].as<std::vector<std::string>>();

  auto config = vit::train::load_config(vm["config"].as<std::string>(), overrides);
  if (vm.count("print-config")) {
    if (runtime.info().rank == 0) std::cout << vit::train::to_yaml(config);
    return 0;
  }
  if (vm.count("dry-run")) {
    vit::train::validate_for_world(config, runtime.info().world_size);
    vit::data::check_paths(config.data);
    vit::model::VisionTransformer model(config.model);  // builds it: catches what validation cannot
    int64_t built = 0;
    for (const auto& p : model->parameters()) built += p.numel();
    if (runtime.info().rank == 0) {
      std::cout << "config: " << config.source << " (valid)\n"
                << "parameters: " << built << "\n"
                << "forward FLOPs per image: " << vit::model::forward_flops_per_image(config.model) << "\n"
                << "training FLOPs per image (3x forward): " << 3 * vit::model::forward_flops_per_image(config.model)
                << "\n";
    }
    return 0;
  }
  // On an error in a multi-rank job the Trainer is deliberately leaked, not destroyed: destroying its NCCL
  // communicator first waits for collectives that peers may never finish. main aborts the whole
  // job instead (Runtime::abort_job aborts the communicators, then MPI_Abort).
  auto trainer = std::make_unique<vit::train::Trainer>(config, runtime.info());
  LeakOnError<vit::train::Trainer> keep_on_error{trainer, runtime.info().world_size > 1};
  auto summary = trainer->fit();
  if (summary.preempted) return vit::train::kExitRequeue;
  if (summary.already_finished) return 0;
  const auto& eval = summary.final_eval;
  vit::log_info("done: ", summary.steps, " steps, ", vit::format_duration(summary.train_seconds), " of training, ",
                vit::format_count(summary.img_per_s), " img/s; eval accuracy ", vit::str(100.0 * eval.model.accuracy),
                "%", eval.has_ema ? vit::str(", moving average ", 100.0 * eval.ema.accuracy, "%") : std::string(),
                " (", eval.model.samples, " samples); outputs in ", config.run.dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  vit::dist::Runtime runtime(&argc, &argv);
  vit::set_log_rank(runtime.info().rank, runtime.info().world_size);
  int code = 0;
  std::string error;
  try {
    code = run(argc, argv, runtime);
  } catch (const vit::ConfigError& e) {
    error = e.what();
    code = kExitUsage;
  } catch (const vit::Error& e) {
    error = e.kind() + ": " + e.what();
    code = kExitError;
  } catch (const c10::Error& e) {
    error = std::string("LibTorch error: ") + e.what_without_backtrace();
    code = kExitError;
  } catch (const std::exception& e) {
    error = std::string("unexpected error: ") + e.what();
    code = kExitError;
  }
  if (!error.empty()) {
    // Most errors meet every rank alike (a typo in the config): rank 0 says it, and its abort
    // below ends the others before they repeat it. A rank's own error still comes out, a moment
    // later.
    if (runtime.info().world_size > 1 && runtime.info().rank != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    vit::log_error(error);
  }
  // A failed rank must not leave its peers waiting in a collective.
  if (code != 0 && code != vit::train::kExitRequeue && runtime.info().world_size > 1) {
    vit::dist::Runtime::abort_job(code);
  }
  return code;
}

// Fault injection for the failure tests (fault_test.sh): a small data-parallel training loop
// on the MPI backend in which rank 1, at step 5, either raises SIGKILL on itself (mode kill)
// or sleeps forever before its next collective (mode hang). Its main() handles errors the
// way the trainer's must: catch, log with the rank, Runtime::abort_job.
// With `cuda`, each rank trains on its GPU with the NCCL backend (the watchdog path) and logs the
// loss every step (a host sync, as a trainer's logging does); exit code 77 when there is no GPU.
// Usage: vit_distributed_fault kill|hang|none <timeout_s> [cpu|cuda]
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/errors.h"
#include "core/log.h"
#include "distributed/communicator.h"
#include "distributed/grad_sync.h"
#include "distributed/consistency.h"
#include "distributed/runtime.h"

namespace {

void train(const vit::dist::LaunchInfo& info, const std::string& mode, double timeout_s, bool cuda) {
  vit::dist::DistConfig config;
  config.backend = cuda ? "nccl" : "mpi";
  config.timeout_s = timeout_s;
  config.bucket_mb = 0.001;
  const torch::Device device = cuda ? vit::dist::select_device(info) : torch::Device(torch::kCPU);
  auto comm = vit::dist::make_communicator(config, info, device);
  torch::manual_seed(0);
  auto net = torch::nn::Sequential(torch::nn::Linear(32, 64), torch::nn::Tanh(), torch::nn::Linear(64, 4));
  net->to(device);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  vit::dist::broadcast_parameters(*comm, net->parameters());
  vit::dist::GradSync sync(named, comm, config);
  for (int step = 0; step < 40; ++step) {
    if (step == 5 && info.rank == 1 && mode == "kill") {
      vit::log_warn("fault injection: rank 1 raises SIGKILL on itself at step 5");
      std::raise(SIGKILL);
    }
    if (step == 5 && info.rank == 1 && mode == "hang") {
      vit::log_warn("fault injection: rank 1 hangs before its step-5 collectives");
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    auto x = torch::randn({8, 32}, torch::TensorOptions().device(device));
    auto loss = net->forward(x).pow(2).mean();
    loss.backward();
    sync.finish();
    {
      torch::NoGradGuard no_grad;
      for (auto p : net->parameters()) p.sub_(p.grad(), 0.01);
    }
    sync.zero_grad();
    if (cuda && step % 5 == 0) vit::log_info("step ", step, " loss ", loss.item<float>());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  vit::log_info("fault test: 40 steps done");
}

}  // namespace

int main(int argc, char** argv) {
  vit::dist::Runtime runtime(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "none";
  const double timeout_s = argc > 2 ? std::atof(argv[2]) : 5.0;
  const bool cuda = argc > 3 && std::string(argv[3]) == "cuda";
  if (cuda && (!torch::cuda::is_available() ||
               static_cast<int>(torch::cuda::device_count()) < runtime.info().local_world_size)) {
    vit::log_info("SKIP: the cuda fault test needs one GPU per rank");
    return 77;
  }
  try {
    train(runtime.info(), mode, timeout_s, cuda);
  } catch (const vit::Error& e) {
    vit::log_error(e.kind(), " on rank ", runtime.info().rank, ": ", e.what());
    vit::dist::Runtime::abort_job(3);
  } catch (const std::exception& e) {
    vit::log_error("error on rank ", runtime.info().rank, ": ", e.what());
    vit::dist::Runtime::abort_job(3);
  }
  return 0;
}

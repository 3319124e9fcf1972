// make_communicator: picks the backend for a device. The only place that asks whether NCCL was
// compiled in; everything else about a backend lives in its own source file.
#include "distributed/communicator.h"

#include "core/errors.h"
#include "distributed/detail.h"

namespace vit::dist {

namespace detail {

void prepare_allgather_output(std::vector<torch::Tensor>& out, const torch::Tensor& input, int world_size,
                              const std::string& what) {
  if (out.empty()) {
    for (int r = 0; r < world_size; ++r) out.push_back(torch::empty_like(input));
  }
  VIT_CHECK(static_cast<int>(out.size()) == world_size, CommError, what, ": out holds ", out.size(),
            " tensors, expected world_size ", world_size);
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

}  // namespace detail

std::shared_ptr<Communicator> make_communicator(const DistConfig& config, const LaunchInfo& info,
                                                torch::Device device) {
  validate(config);
  if (info.world_size == 1) {
    return detail::make_local_communicator(device);
  }
  std::string backend = config.backend;
  if (backend == "auto") {
    backend = device.is_cuda() ? "nccl" : "mpi";
  }
  if (backend == "mpi") {
    VIT_CHECK(device.is_cpu(), ConfigError,
              "distributed.backend: mpi carries CPU tensors only, but the device is ", device.str(),
              "; set distributed.backend to auto or nccl for GPU training");
    return detail::make_mpi_communicator(config, info);
  }
  VIT_CHECK(device.is_cuda(), ConfigError,
            "distributed.backend: nccl carries CUDA tensors only, but the device is ", device.str(),
            "; set distributed.backend to auto or mpi for CPU training");
#if VIT_HAVE_NCCL
  return detail::make_nccl_communicator(config, info, device);
#else
  VIT_THROW(ConfigError,
            "distributed.backend: this build has no NCCL (configured without CUDA); rebuild with "
            "VIT_WITH_CUDA=ON and a CUDA toolkit with NCCL, or train on CPU with backend mpi");
#endif
}

}  // namespace vit::dist

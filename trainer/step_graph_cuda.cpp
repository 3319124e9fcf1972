#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "core/errors.h"
#include "trainer/step_graph.h"

namespace vit::train {
namespace {

// Thread-local capture: only this thread is barred from calls that would break the capture.
// Global mode would also bar other threads of the process (data-loader workers allocating
// pinned memory, which queries events; the collective watchdog), turning their routine calls
// into capture errors.
constexpr cudaStreamCaptureMode kCaptureMode = cudaStreamCaptureModeThreadLocal;

class CudaStepGraph : public StepGraph {
 public:
  CudaStepGraph(const std::function<void()>& step, const torch::Device& device) {
    VIT_CHECK(device.is_cuda(), ConfigError, "train.cuda_graph: needs a GPU (run.device is ", device.str(), ")");
    c10::cuda::CUDAGuard device_guard(device);
    auto current = c10::cuda::getCurrentCUDAStream(device.index());
    if (current != c10::cuda::getDefaultCUDAStream(device.index())) {
      graph_.capture_begin({0, 0}, kCaptureMode);  // on the current stream: the one autograd's hooks also use
      step();
      graph_.capture_end();
      return;
    }
    auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    at::cuda::CUDAEvent before, after;
    before.record(current);  // capture sees every tensor the eager warm-up produced
    before.block(side);
    {
      c10::cuda::CUDAStreamGuard stream_guard(side);
      graph_.capture_begin({0, 0}, kCaptureMode);
      step();
      graph_.capture_end();
    }
    after.record(side);
    after.block(current);
  }

  void replay() override { graph_.replay(); }

 private:
  at::cuda::CUDAGraph graph_;
};

}  // namespace

void use_capture_stream(const torch::Device& device) {
  VIT_CHECK(device.is_cuda(), ConfigError, "train.cuda_graph: needs a GPU (run.device is ", device.str(), ")");
  c10::cuda::CUDAGuard device_guard(device);
  // A stream of our own: the pool hands its streams out round-robin (data copies take one per
  // batch), so a pool stream would now and then serialise them with the step. Lives as long as
  // the process.
  cudaStream_t stream = nullptr;
  C10_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromExternal(stream, device.index()));
}

std::unique_ptr<StepGraph> capture_step_graph(const std::function<void()>& step, const torch::Device& device) {
  return std::make_unique<CudaStepGraph>(step, device);
}

}  // namespace vit::train

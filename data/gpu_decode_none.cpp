// GpuDecoder in a build without nvJPEG (no CUDA, or nvjpeg.h not found at configure time):
// open() says why, and the streaming loader decodes on the CPU. CMake builds this file or
// gpu_decode_nvjpeg.cpp.
#include "data/gpu_decode.h"

namespace vit::data {

std::unique_ptr<GpuDecoder> GpuDecoder::open(torch::Device device, std::string* why_not) {
  if (why_not != nullptr) {
    *why_not = device.is_cuda() ? "this build has no nvJPEG (launch/setup.sh installs PyPI's nvidia-nvjpeg; rebuild)"
                                : "the run is on the CPU";
  }
  return nullptr;
}

}  // namespace vit::data

// Raw CUDA launcher behind fused_gelu.h (no LibTorch types: nvcc compiles the .cu file without
// the heavy headers). Row-major [rows, cols] bf16 tensors, cols a multiple of 8, 16-byte aligned.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace vit::model::kernels {

constexpr int64_t kGeluVector = 8;        // bf16 columns per thread (one 16-byte access)
constexpr int64_t kGeluThreads = 128;     // threads per block
constexpr int64_t kGeluBlockColumns = kGeluVector * kGeluThreads;

struct GeluBackwardArgs {
  const uint16_t* x;       // [rows, cols] bf16 bits: the GELU input (the Linear's output, bias included)
  const uint16_t* grad_y;  // [rows, cols] bf16 bits: the gradient of the GELU output
  uint16_t* grad_x;        // [rows, cols] bf16 bits: grad_y * GELU'(x)
  float* bias_partial;     // [row_blocks, cols]: per-block column sums of grad_x in fp32 (before rounding)
  int64_t rows, cols;
};

// True when the pointers and cols suit the kernel's 16-byte accesses.
bool gelu_backward_supported(const GeluBackwardArgs& args);

// Grid: ceil(cols / kGeluBlockColumns) x row_blocks; block b of a column strip takes rows
// [b * chunk, (b + 1) * chunk), chunk = ceil(rows / row_blocks).
cudaError_t launch_gelu_backward(const GeluBackwardArgs& args, int row_blocks, cudaStream_t stream);

}  // namespace vit::model::kernels

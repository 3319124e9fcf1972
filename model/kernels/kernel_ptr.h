// Raw pointers for the fused kernels' argument structs (the *_kernels.h launchers take no
// LibTorch types).
#pragma once

#include <torch/torch.h>

namespace vit::model {

// The tensor's data as T*, or null for an undefined tensor (an absent optional input).
template <typename T>
T* data_or_null(const torch::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

}  // namespace vit::model

// One kernel casts the Linears' fp32 weights and biases to bf16 (see weight_casts.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "core/errors.h"
#include "core/log.h"
#include "model/kernels/cast_kernels.h"
#include "model/kernels/weight_casts.h"

namespace vit::model {
namespace {

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

bool qualifies(const torch::Tensor& p, const torch::Device& device) {
  return p.defined() && p.device() == device && p.scalar_type() == torch::kFloat32 && p.is_contiguous() &&
         reinterpret_cast<uintptr_t>(p.data_ptr()) % 16 == 0;
}

}  // namespace

struct WeightCasts::State {
  std::vector<std::pair<const void*, int64_t>> keys;                         // (address, numel) per tensor
  std::unordered_map<const void*, std::pair<int64_t, int64_t>> where;        // address -> (offset, numel)
  torch::Tensor flat;    // bf16: every copy, each starting on a 16-byte boundary
  torch::Tensor tables;  // on the device: the CastSegment table, then the CastBlock table
  int64_t num_segments = 0, num_blocks = 0;
  bool valid = false;

  // The tensors the layout was built for, at the same addresses; while valid, still fp32,
  // contiguous and on the same device (so the kernel reads what it was built to read).
  bool same_layout(const std::vector<torch::Tensor>& params) const {
    if (params.size() != keys.size()) return false;
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].defined() || keys[i] != std::make_pair<const void*, int64_t>(params[i].data_ptr(),
                                                                                  params[i].numel())) {
        return false;
      }
      if (valid && !qualifies(params[i], flat.device())) return false;
    }
    return true;
  }

  void reset() {
    valid = false;
    keys.clear();
    where.clear();
    flat = tables = torch::Tensor();
  }

  // Returns false where a tensor does not qualify; the keys then remember the set, so that it is
  // not tried again every forward.
  bool build(const std::vector<torch::Tensor>& params) {
    reset();
    std::vector<std::pair<const void*, int64_t>> built;
    for (const auto& p : params) built.emplace_back(p.defined() ? p.data_ptr() : nullptr, p.defined() ? p.numel() : 0);
    const auto device = params[0].device();
    int64_t total = 0;
    for (const auto& p : params) {
      if (!qualifies(p, device)) {
        where.clear();
        keys = std::move(built);
        return false;
      }
      if (where.count(p.data_ptr())) continue;  // the same tensor twice: one copy
      where[p.data_ptr()] = {total, p.numel()};
      total += (p.numel() + 7) / 8 * 8;
    }
    flat = torch::empty({total}, torch::TensorOptions().device(device).dtype(torch::kBFloat16));
    std::vector<kernels::CastSegment> segments;
    std::vector<kernels::CastBlock> blocks;
    auto* base = static_cast<uint16_t*>(flat.data_ptr());
    for (const auto& [address, at] : where) {
      const auto segment = static_cast<int64_t>(segments.size());
      segments.push_back({static_cast<const float*>(address), base + at.first, at.second});
      for (int64_t start = 0; start < at.second; start += kernels::kCastChunk) blocks.push_back({segment, start});
    }
    num_segments = static_cast<int64_t>(segments.size());
    num_blocks = static_cast<int64_t>(blocks.size());
    if (num_blocks == 0) {  // nothing to cast
      keys = std::move(built);
      return false;
    }
    static_assert(sizeof(kernels::CastSegment) == 3 * sizeof(int64_t) && sizeof(kernels::CastBlock) == 2 * sizeof(int64_t),
                  "the tables are packed as int64 words");
    auto host = torch::empty({3 * num_segments + 2 * num_blocks}, torch::kInt64);
    std::memcpy(host.data_ptr(), segments.data(), segments.size() * sizeof(kernels::CastSegment));
    std::memcpy(host.data_ptr<int64_t>() + 3 * num_segments, blocks.data(), blocks.size() * sizeof(kernels::CastBlock));
    tables = host.to(device);
    keys = std::move(built);  // only now: after a failed allocation above the set is tried again
    valid = true;
    return true;
  }
};

WeightCasts::WeightCasts() : state_(std::make_unique<State>()) {}
WeightCasts::~WeightCasts() = default;

bool WeightCasts::refresh(const std::vector<torch::Tensor>& params) {
  auto& s = *state_;
  if (params.empty() || !params[0].defined() || !params[0].is_cuda()) {
    s.reset();  // e.g. the model moved to the CPU: no copies kept on the GPU
    return false;
  }
  c10::cuda::CUDAGuard guard(params[0].device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (!s.same_layout(params)) {
    if (capturing(stream)) {  // no host-to-device copy inside a capture: the Linears cast their own
      s.reset();
      static std::once_flag told;
      std::call_once(told, [] {
        log_warn("weight casts: the Linears' weights changed during a CUDA graph capture; the captured step casts "
                 "each one separately (the same values, a little slower)");
      });
      return false;
    }
    if (!s.build(params)) {
      static std::once_flag told;
      std::call_once(told, [] {
        log_warn("weight casts: a Linear weight or bias is not a contiguous, 16-byte aligned fp32 tensor on one GPU; "
                 "each Linear casts its own (the same values, a little slower)");
      });
    }
  }
  if (!s.valid) return false;
  const auto* words = s.tables.data_ptr<int64_t>();
  const auto status = kernels::launch_cast_to_bf16(reinterpret_cast<const kernels::CastSegment*>(words),
                                                   reinterpret_cast<const kernels::CastBlock*>(words + 3 * s.num_segments),
                                                   s.num_blocks, stream);
  VIT_CHECK(status == cudaSuccess, ModelError, "weight casts: ", cudaGetErrorString(status));
  return true;
}

torch::Tensor WeightCasts::find(const torch::Tensor& p) const {
  const auto& s = *state_;
  if (!s.valid || !p.defined() || p.scalar_type() != torch::kFloat32 || !p.is_contiguous()) return {};
  const auto it = s.where.find(p.data_ptr());
  if (it == s.where.end() || it->second.second != p.numel()) return {};
  return s.flat.narrow(0, it->second.first, it->second.second).view(p.sizes());
}

}  // namespace vit::model

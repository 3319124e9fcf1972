// DistConfig: how ranks talk. Filled from the YAML section `distributed`. Launch facts (rank,
// world size, local rank) come from the launcher, never from here.
#pragma once

#include <cstdint>
#include <string>

namespace vit::dist {

struct DistConfig {
  std::string backend = "auto";  // auto (NCCL for GPU tensors, MPI for CPU) | mpi | nccl
  double bucket_mb = 25.0;       // gradient bucket size
  bool compress_bf16 = false;    // all-reduce gradients in bf16 (halves the bytes)
  double timeout_s = 300.0;      // a collective running longer is an error, and the job aborts
  int64_t check_every_steps = 0;  // parameter checksum across ranks every N steps (0 = off)
  std::string on_nonfinite = "skip";  // skip | stop: a non-finite gradient on any rank
};

void validate(const DistConfig& config);

}  // namespace vit::dist

// Consistency of replicas: every rank starts from rank 0's parameters, runs the same resolved
// config, and stays bitwise identical (periodic checksum). All functions here are collectives:
// every rank calls them, in the same order, with the same number and shapes of tensors.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.h"

namespace vit::dist {

// Copies the root's values into `params` on every rank (one broadcast per dtype, through a flat
// buffer). Tensors must live on comm.device(). Blocks until done (MPI) / is ordered on the
// current stream (NCCL).
void broadcast_parameters(Communicator& comm, const std::vector<torch::Tensor>& params, int root = 0);

// A resolved config as (key path, value) pairs in schema order, e.g. ("model.depth", "6"): the
// trainer's config schema gives them (train::config_pairs).
using ConfigPairs = std::vector<std::pair<std::string, std::string>>;

// Compares a hash of each rank's resolved config. On a mismatch every rank throws the same
// ConfigError naming the first differing key and the ranks, e.g.
// "model.depth: rank 0 has 6, rank 2 has 4".
void check_same_config(Communicator& comm, const ConfigPairs& config);

// Checksums every parameter's bits on its device (exact integer sums, no host copy of the
// weights), allgathers them and throws CommError on every rank when any rank differs from
// rank 0, naming the ranks, the step and the first differing parameter (by name when `names`
// is given, else by index).
void check_parameters_in_sync(Communicator& comm, const std::vector<torch::Tensor>& params,
                              int64_t step, const std::vector<std::string>& names = {});

// The first difference between two resolved configs: the first key of `a` whose value differs
// or that `b` lacks, else the first key only `b` has; key "" when equal. Exposed for tests.
struct ConfigDifference {
  std::string key;    // "model.depth", "" when the texts are equal
  std::string value_a;  // "<missing>" when absent
  std::string value_b;
};
ConfigDifference first_config_difference(const ConfigPairs& a, const ConfigPairs& b);

}  // namespace vit::dist

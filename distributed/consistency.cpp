// Replica consistency: parameter broadcast from rank 0, resolved-config comparison (hash, then
// the first differing key), and the periodic parameter checksum. Every function is a collective
// whose collectives are unconditional on all ranks up to the point where all ranks agree on
// the outcome (all throw together or none does).
#include "distributed/consistency.h"

#include <algorithm>
#include <map>

#include "core/errors.h"
#include "core/files.h"
#include "core/strings.h"

namespace vit::dist {
namespace {

torch::TensorOptions on(const Communicator& comm, torch::ScalarType type) {
  return torch::TensorOptions().dtype(type).device(comm.device());
}

std::vector<torch::Tensor> allgather_cpu(Communicator& comm, const torch::Tensor& input) {
  std::vector<torch::Tensor> out;
  comm.allgather(out, input)->wait();
  for (auto& t : out) t = t.cpu();
  return out;
}

// The root's string on every rank (two broadcasts: length, then bytes).
std::string broadcast_string(Communicator& comm, const std::string& text, int root) {
  auto length = torch::full({1}, static_cast<int64_t>(text.size()), on(comm, torch::kLong));
  comm.broadcast(length, {root})->wait();
  const int64_t n = length.cpu().item<int64_t>();
  auto bytes = torch::zeros({std::max<int64_t>(n, 1)}, torch::kUInt8);
  if (comm.rank() == root) std::copy(text.begin(), text.end(), bytes.data_ptr<uint8_t>());
  bytes = bytes.to(comm.device());
  comm.broadcast(bytes, {root})->wait();
  bytes = bytes.cpu();
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), n);
}

// The pairs as one byte string: key, NUL, value, NUL, ... (what is hashed and broadcast).
std::string serialise(const ConfigPairs& pairs) {
  std::string out;
  for (const auto& [key, value] : pairs) {
    out += key;
    out += '\0';
    out += value;
    out += '\0';
  }
  return out;
}

ConfigPairs deserialise(const std::string& text) {
  ConfigPairs out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t key_end = text.find('\0', at);
    const size_t value_end = text.find('\0', key_end + 1);
    out.emplace_back(text.substr(at, key_end - at), text.substr(key_end + 1, value_end - key_end - 1));
    at = value_end + 1;
  }
  return out;
}

// Bits of a tensor as exact integer sums (no floating-point rounding): for each 16-bit piece of
// every element, the plain sum and a position-weighted sum (catches permutations). 8 values.
torch::Tensor bit_checksum(const torch::Tensor& param) {
  auto flat = param.detach().contiguous().view(-1);
  torch::Tensor bits;
  switch (flat.element_size()) {
    case 1: bits = flat.view(torch::kUInt8); break;
    case 2: bits = flat.view(torch::kShort); break;
    case 4: bits = flat.view(torch::kInt); break;
    default: bits = flat.view(torch::kLong); break;
  }
  const auto wide = bits.to(torch::kLong);
  const auto weight = torch::arange(flat.numel(), wide.options()).remainder(1021).add_(1);
  std::vector<torch::Tensor> sums;
  for (int64_t shift = 0; shift < 64; shift += 16) {
    if (shift >= 8 * static_cast<int64_t>(flat.element_size()) && shift > 0) {
      sums.push_back(torch::zeros({2}, wide.options()));
      continue;
    }
    const auto piece = wide.bitwise_right_shift(shift).bitwise_and(0xFFFF);  // each < 2^16
    sums.push_back(torch::stack({piece.sum(), piece.mul(weight).sum()}));
  }
  return torch::cat(sums);  // [8] int64
}

}  // namespace

void broadcast_parameters(Communicator& comm, const std::vector<torch::Tensor>& params, int root) {
  torch::NoGradGuard no_grad;
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_type;  // the same map on every rank
  for (const auto& p : params) by_type[p.scalar_type()].push_back(p);
  for (auto& [type, group] : by_type) {
    int64_t total = 0;
    for (const auto& p : group) total += p.numel();
    torch::Tensor flat;
    if (comm.rank() == root) {
      std::vector<torch::Tensor> pieces;
      for (const auto& p : group) pieces.push_back(p.detach().reshape({-1}));
      flat = torch::cat(pieces).to(comm.device());
    } else {
      flat = torch::empty({total}, on(comm, type));
    }
    comm.broadcast(flat, {root})->wait();
    if (comm.rank() == root) continue;
    int64_t offset = 0;
    for (auto& p : group) {
      p.detach().copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
  }
}

ConfigDifference first_config_difference(const ConfigPairs& a, const ConfigPairs& b) {
  std::map<std::string, std::string> map_a(a.begin(), a.end()), map_b(b.begin(), b.end());
  for (const auto& [key, value] : a) {
    auto it = map_b.find(key);
    if (it == map_b.end()) return {key, value, "<missing>"};
    if (it->second != value) return {key, value, it->second};
  }
  for (const auto& [key, value] : b) {
    if (map_a.count(key) == 0) return {key, "<missing>", value};
  }
  return {};
}

void check_same_config(Communicator& comm, const ConfigPairs& config) {
  const std::string resolved = serialise(config);
  const uint64_t hash = fnv1a64(resolved.data(), resolved.size());
  auto mine = torch::full({1}, static_cast<int64_t>(hash), on(comm, torch::kLong));
  const auto hashes = allgather_cpu(comm, mine);
  std::vector<int> differing;
  for (int r = 1; r < comm.world_size(); ++r) {
    if (hashes[r].item<int64_t>() != hashes[0].item<int64_t>()) differing.push_back(r);
  }
  if (differing.empty()) return;
  // Every rank knows the same `differing`, so these broadcasts happen on all ranks.
  const int other = differing.front();
  const auto diff = first_config_difference(deserialise(broadcast_string(comm, resolved, 0)),
                                            deserialise(broadcast_string(comm, resolved, other)));
  std::vector<std::string> ranks;
  for (int r : differing) ranks.push_back(std::to_string(r));
  const std::string where = diff.key.empty()
                                ? str("the resolved configs of rank 0 and rank ", other, " differ only in formatting")
                                : str(diff.key, ": rank 0 has ", diff.value_a, ", rank ", other, " has ", diff.value_b);
  VIT_THROW(ConfigError, where, " (rank(s) ", join(ranks, ", "),
            " run a resolved config different from rank 0's; every rank must get the same config "
            "file and the same --set overrides)");
}

void check_parameters_in_sync(Communicator& comm, const std::vector<torch::Tensor>& params,
                              int64_t step, const std::vector<std::string>& names) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> sums;
  for (const auto& p : params) sums.push_back(bit_checksum(p));
  auto mine = sums.empty() ? torch::zeros({1, 8}, on(comm, torch::kLong)) : torch::stack(sums).to(comm.device());
  const auto all = allgather_cpu(comm, mine);
  std::vector<std::string> ranks;
  int64_t first_param = -1;
  for (int r = 1; r < comm.world_size(); ++r) {
    const auto rows_differ = all[r].ne(all[0]).any(/*dim=*/-1);
    if (!rows_differ.any().item<bool>()) continue;
    ranks.push_back(std::to_string(r));
    if (first_param < 0) first_param = rows_differ.nonzero()[0][0].item<int64_t>();
  }
  if (ranks.empty()) return;
  const std::string param = static_cast<size_t>(first_param) < names.size()
                                ? names[first_param]
                                : "#" + std::to_string(first_param);
  VIT_THROW(CommError, "parameter checksum at step ", step, ": rank(s) ", join(ranks, ", "),
            " hold parameters different from rank 0 (first: ", param, ", of ", params.size(),
            "); replicas diverged: look for a rank-dependent code path, non-deterministic "
            "kernels, or a gradient that was not synchronised");
}

}  // namespace vit::dist

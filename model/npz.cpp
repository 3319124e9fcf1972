#include "model/npz.h"

#include <zip.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "core/errors.h"
#include "core/files.h"
#include "core/strings.h"

namespace vit::model {
namespace {

// Little-endian integer of `bytes` bytes at `at` (the .npy header's length field).
uint64_t le(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[at + i])) << (8 * i);
  return v;
}

// One .npy payload -> tensor. Header: "\x93NUMPY", version, header length, a Python dict.
torch::Tensor parse_npy(const std::string& b, const std::string& where) {
  VIT_CHECK(b.size() >= 10 && b.compare(0, 6, "\x93NUMPY") == 0, CheckpointError, where, ": not a .npy array");
  const int major = static_cast<unsigned char>(b[6]);
  const size_t len_bytes = major == 1 ? 2 : 4;
  const size_t header_len = le(b, 8, static_cast<int>(len_bytes));
  const size_t data_at = 8 + len_bytes + header_len;
  VIT_CHECK(data_at <= b.size(), CheckpointError, where, ": truncated .npy header");
  const std::string header = b.substr(8 + len_bytes, header_len);
  auto value_of = [&](const std::string& key) {
    size_t k = header.find("'" + key + "'");
    VIT_CHECK(k != std::string::npos, CheckpointError, where, ": .npy header lacks '", key, "'");
    return trim(header.substr(header.find(':', k) + 1));
  };
  std::string descr = value_of("descr");
  descr = descr.substr(1, descr.find('\'', 1) - 1);  // '<f4'
  VIT_CHECK(value_of("fortran_order").rfind("False", 0) == 0, CheckpointError, where,
            ": Fortran-ordered arrays are not supported");
  std::string shape_text = value_of("shape");
  shape_text = shape_text.substr(1, shape_text.find(')') - 1);
  std::vector<int64_t> shape;
  for (const auto& part : split(shape_text, ',')) {
    if (!trim(part).empty()) shape.push_back(std::stoll(trim(part)));
  }
  torch::ScalarType type;
  if (descr == "<f4") type = torch::kFloat32;
  else if (descr == "<f8") type = torch::kFloat64;
  else if (descr == "<f2") type = torch::kFloat16;
  else if (descr == "<i8") type = torch::kInt64;
  else if (descr == "<i4") type = torch::kInt32;
  else if (descr == "|u1") type = torch::kUInt8;
  else VIT_THROW(CheckpointError, where, ": unsupported dtype ", descr);
  auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
  VIT_CHECK(data_at + t.nbytes() <= b.size(), CheckpointError, where, ": truncated array data");
  std::memcpy(t.data_ptr(), b.data() + data_at, t.nbytes());
  return t;
}

}  // namespace

NamedTensors read_npz(const std::string& path) {
  VIT_CHECK(std::filesystem::exists(path), CheckpointError, "cannot read '", path, "': no such file");
  int code = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &code);
  if (archive == nullptr) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    VIT_THROW(CheckpointError, "'", path, "' is not a readable NumPy .npz archive (", why,
              "; a file cut short loses the ZIP directory at its end)");
  }
  const std::unique_ptr<zip_t, void (*)(zip_t*)> close(archive, [](zip_t* z) { zip_discard(z); });
  NamedTensors out;
  const zip_int64_t count = zip_get_num_entries(archive, 0);
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t stat;
    VIT_CHECK(zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &stat) == 0, CheckpointError, "'", path,
              "': member ", i, " is unreadable (", zip_strerror(archive), ")");
    const std::string name = stat.name;
    zip_file_t* member = zip_fopen_index(archive, static_cast<zip_uint64_t>(i), 0);
    VIT_CHECK(member != nullptr, CheckpointError, "'", path, "': member ", name, " does not open (",
              zip_strerror(archive), ")");
    std::string bytes(static_cast<size_t>(stat.size), '\0');
    const zip_int64_t got = zip_fread(member, bytes.data(), stat.size);
    zip_fclose(member);  // also checks the member's CRC: a damaged one reads short or fails
    VIT_CHECK(got == static_cast<zip_int64_t>(stat.size), CheckpointError, "'", path, "': member ", name,
              " is truncated or damaged");
    std::string key = ends_with(name, ".npy") ? name.substr(0, name.size() - 4) : name;
    out.emplace_back(key, parse_npy(bytes, "'" + path + "' member " + name));
  }
  VIT_CHECK(!out.empty(), CheckpointError, "'", path, "' is not a NumPy .npz archive (no arrays found)");
  return out;
}

NamedTensors vit_jax_to_timm(const NamedTensors& npz, const std::string& source) {
  std::map<std::string, torch::Tensor> w(npz.begin(), npz.end());
  std::string prefix = w.count("opt/target/embedding/kernel") ? "opt/target/" : "";
  auto get = [&](const std::string& key) {
    auto it = w.find(prefix + key);
    VIT_CHECK(it != w.end(), ModelError, "'", source, "': vit_jax checkpoint lacks '", prefix + key, "'");
    return it->second.to(torch::kFloat32);
  };
  NamedTensors out;
  // JAX kernels are [in, out] (dense) or [kh, kw, in, out] (conv): transpose to PyTorch's layout.
  out.emplace_back("cls_token", get("cls"));
  out.emplace_back("pos_embed", get("Transformer/posembed_input/pos_embedding"));
  out.emplace_back("patch_embed.proj.weight", get("embedding/kernel").permute({3, 2, 0, 1}).contiguous());
  out.emplace_back("patch_embed.proj.bias", get("embedding/bias"));
  for (int i = 0; w.count(prefix + "Transformer/encoderblock_" + std::to_string(i) + "/LayerNorm_0/scale"); ++i) {
    const std::string b = "Transformer/encoderblock_" + std::to_string(i) + "/";
    const std::string mha = b + "MultiHeadDotProductAttention_1/";
    const std::string n = "blocks." + std::to_string(i) + ".";
    out.emplace_back(n + "norm1.weight", get(b + "LayerNorm_0/scale"));
    out.emplace_back(n + "norm1.bias", get(b + "LayerNorm_0/bias"));
    std::vector<torch::Tensor> qkv_w, qkv_b;
    for (const char* part : {"query", "key", "value"}) {
      qkv_w.push_back(get(mha + part + "/kernel").flatten(1).t());  // [D, H, Dh] -> [H*Dh, D]
      qkv_b.push_back(get(mha + part + "/bias").reshape({-1}));
    }
    out.emplace_back(n + "attn.qkv.weight", torch::cat(qkv_w, 0).contiguous());
    out.emplace_back(n + "attn.qkv.bias", torch::cat(qkv_b, 0));
    out.emplace_back(n + "attn.proj.weight", get(mha + "out/kernel").permute({2, 0, 1}).flatten(1).contiguous());
    out.emplace_back(n + "attn.proj.bias", get(mha + "out/bias"));
    out.emplace_back(n + "norm2.weight", get(b + "LayerNorm_2/scale"));
    out.emplace_back(n + "norm2.bias", get(b + "LayerNorm_2/bias"));
    for (int r = 0; r < 2; ++r) {
      const std::string dense = b + "MlpBlock_3/Dense_" + std::to_string(r) + "/";
      out.emplace_back(n + "mlp.fc" + std::to_string(r + 1) + ".weight", get(dense + "kernel").t().contiguous());
      out.emplace_back(n + "mlp.fc" + std::to_string(r + 1) + ".bias", get(dense + "bias"));
    }
  }
  VIT_CHECK(out.size() > 4, ModelError, "'", source, "': no Transformer/encoderblock_0 in the vit_jax checkpoint");
  out.emplace_back("norm.weight", get("Transformer/encoder_norm/scale"));
  out.emplace_back("norm.bias", get("Transformer/encoder_norm/bias"));
  if (w.count(prefix + "pre_logits/kernel")) {
    out.emplace_back("pre_logits.fc.weight", get("pre_logits/kernel").t().contiguous());
    out.emplace_back("pre_logits.fc.bias", get("pre_logits/bias"));
  }
  if (w.count(prefix + "head/kernel")) {
    out.emplace_back("head.weight", get("head/kernel").t().contiguous());
    out.emplace_back("head.bias", get("head/bias"));
  }
  return out;
}

}  // namespace vit::model

#include "model/safetensors.h"

#include <cstring>

#include "core/errors.h"
#include "core/files.h"
#include "core/json.h"

namespace vit::model {
namespace {

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};
const DtypeName kDtypes[] = {
    {torch::kFloat64, "F64"}, {torch::kFloat32, "F32"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
    {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"},
};

const char* dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  VIT_THROW(ModelError, "safetensors: dtype ", c10::toString(t), " is not supported");
}

}  // namespace

std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> cpu;
  cpu.reserve(tensors.size());
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& kv : metadata) meta[kv.first] = kv.second;
    header["__metadata__"] = meta;
  }
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto c = t.detach().to(torch::kCPU).contiguous();
    Json entry = Json::object();
    entry["dtype"] = dtype_name(c.scalar_type());
    Json shape = Json::array();
    for (auto s : c.sizes()) shape.push_back(static_cast<int64_t>(s));
    entry["shape"] = shape;
    int64_t nbytes = static_cast<int64_t>(c.nbytes());
    entry["data_offsets"] = Json::array({offset, offset + nbytes});
    header[name] = entry;
    offset += nbytes;
    cpu.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);  // little-endian
  out += json;
  out.reserve(out.size() + static_cast<size_t>(offset));
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_bytes(tensors, metadata));
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& file) {
  VIT_CHECK(bytes.size() >= 8, CheckpointError, "'", file, "' is not a safetensors file (", bytes.size(),
            " bytes, truncated?)");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  VIT_CHECK(header_len <= bytes.size() - 8, CheckpointError, "'", file, "': header length ", header_len,
            " exceeds the file size ", bytes.size(), " (truncated or not a safetensors file)");
  Json header;
  try {
    header = Json::parse(bytes.substr(8, header_len));
  } catch (const std::exception& e) {
    VIT_THROW(CheckpointError, "'", file, "': malformed safetensors header: ", e.what());
  }
  VIT_CHECK(header.is_object(), CheckpointError, "'", file, "': safetensors header is not a JSON object");
  const size_t data_start = 8 + header_len;
  const size_t data_size = bytes.size() - data_start;
  SafetensorsFile result;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [key, value] : entry.items()) result.metadata[key] = value.get<std::string>();
      continue;
    }
    try {
      const auto& dtype = entry.at("dtype").get_ref<const std::string&>();
      torch::ScalarType type = torch::kFloat32;
      bool known = false;
      for (const auto& d : kDtypes)
        if (dtype == d.name) {
          type = d.type;
          known = true;
        }
      VIT_CHECK(known, CheckpointError, "'", file, "': tensor '", name, "' has unsupported dtype ", dtype);
      std::vector<int64_t> shape;
      int64_t count = 1;  // checked before LibTorch sees the shape: no dimension below 0, no product past the file
      const Json& dims = entry.at("shape");
      VIT_CHECK(dims.is_array(), CheckpointError, "'", file, "': tensor '", name, "' has a shape that is not a list");
      for (const auto& s : dims) {
        const auto d = s.get<int64_t>();
        VIT_CHECK(d >= 0 && (d == 0 || count <= static_cast<int64_t>(data_size) / d), CheckpointError, "'", file,
                  "': tensor '", name, "' has a shape with dimension ", d, " (negative, or more elements than the ",
                  data_size, " data bytes hold); the file is corrupt");
        count *= d;
        shape.push_back(d);
      }
      const Json& offsets = entry.at("data_offsets");
      VIT_CHECK(offsets.is_array() && offsets.size() == 2, CheckpointError, "'", file, "': tensor '", name, "' has bad data_offsets");
      const auto begin = offsets[0].get<int64_t>(), end = offsets[1].get<int64_t>();
      auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
      VIT_CHECK(begin >= 0 && end >= begin && static_cast<size_t>(end) <= data_size &&
                    static_cast<int64_t>(t.nbytes()) == end - begin,
                CheckpointError, "'", file, "': tensor '", name, "' data [", begin, ", ", end,
                ") does not fit its shape or the file (", data_size, " data bytes; truncated?)");
      std::memcpy(t.data_ptr(), bytes.data() + data_start + begin, t.nbytes());
      result.tensors.emplace_back(name, t);
    } catch (const CheckpointError&) {
      throw;
    } catch (const c10::Error& e) {
      VIT_THROW(CheckpointError, "'", file, "': bad header entry for '", name, "': ", e.what_without_backtrace());
    } catch (const std::exception& e) {
      VIT_THROW(CheckpointError, "'", file, "': bad header entry for '", name, "': ", e.what());
    }
  }
  return result;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const DataError& e) {
    VIT_THROW(CheckpointError, e.what());
  }
  return parse_safetensors(bytes, path);
}

NamedTensors named_parameters(torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace vit::model

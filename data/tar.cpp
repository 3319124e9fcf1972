// Tar listing, ranged reads and a ustar writer (see tar.h).
#include "data/tar.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::data {
namespace {

constexpr int64_t kBlock = 512;

int64_t parse_octal(const char* p, size_t n) {
  int64_t v = 0;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\0')) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = v * 8 + (p[i] - '0');
  return v;
}

int64_t parse_size(const char* p) {
  if (static_cast<unsigned char>(p[0]) & 0x80) {  // GNU base-256 for sizes >= 8 GiB
    int64_t v = 0;
    for (int i = 1; i < 12; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
    return v;
  }
  return parse_octal(p, 12);
}

bool checksum_ok(const unsigned char* h) {
  int64_t sum = 0;
  for (int i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : h[i];
  return sum == parse_octal(reinterpret_cast<const char*>(h) + 148, 8);
}

std::string field(const unsigned char* h, int offset, int length) {
  const char* p = reinterpret_cast<const char*>(h) + offset;
  return std::string(p, strnlen(p, length));
}

// pax records: "<len> <key>=<value>\n" repeated.
void parse_pax(const std::string& data, std::string* path, int64_t* size) {
  size_t pos = 0;
  while (pos < data.size()) {
    size_t space = data.find(' ', pos);
    if (space == std::string::npos) break;
    const size_t len = std::stoul(data.substr(pos, space - pos));
    if (len == 0 || pos + len > data.size()) break;
    const std::string rec = data.substr(space + 1, pos + len - space - 2);  // drop trailing '\n'
    const size_t eq = rec.find('=');
    if (eq != std::string::npos) {
      const std::string key = rec.substr(0, eq), value = rec.substr(eq + 1);
      if (key == "path") *path = value;
      if (key == "size") *size = std::stoll(value);
    }
    pos += len;
  }
}

std::string read_at(int fd, const std::string& file, int64_t offset, int64_t size) {
  std::string out(static_cast<size_t>(size), '\0');
  int64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, out.data() + done, static_cast<size_t>(size - done), offset + done);
    VIT_CHECK(n > 0, DataError, file, ": truncated (wanted ", size, " bytes at offset ", offset, ")");
    done += n;
  }
  return out;
}

// Closes the descriptor on every path out, exceptions included.
struct Fd {
  explicit Fd(const std::string& file) : fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC)) {
    VIT_CHECK(fd >= 0, DataError, file, ": cannot open (", std::strerror(errno), ")");
  }
  ~Fd() { ::close(fd); }
  int fd;
};

}  // namespace

std::string read_file_range(const std::string& file, int64_t offset, int64_t size) {
  Fd fd(file);
  return read_at(fd.fd, file, offset, size);
}

std::vector<TarMember> list_tar(const std::string& file, std::string* damage) {
  VIT_CHECK(std::filesystem::is_regular_file(file), DataError, file, ": shard does not exist");
  const int64_t file_size = static_cast<int64_t>(std::filesystem::file_size(file));
  Fd fd(file);
  std::vector<TarMember> members;
  std::string long_name;
  int64_t pax_size = -1;
  int64_t pos = 0;
  // A damaged end: the members before it are whole; what came after `pos` is lost.
  auto damaged = [&](const std::string& what) {
    const std::string text = str(file, ": ", what, " (", members.size(), " whole member(s) before offset ", pos,
                                 "; the rest of the shard is lost: copy it again)");
    VIT_CHECK(damage != nullptr, DataError, text);
    *damage = text;
    return members;
  };
  while (pos + kBlock <= file_size) {
    const std::string block = read_at(fd.fd, file, pos, kBlock);
    const auto* h = reinterpret_cast<const unsigned char*>(block.data());
    if (std::all_of(block.begin(), block.end(), [](char c) { return c == 0; })) return members;
    if (!checksum_ok(h)) {
      VIT_CHECK(pos != 0 || !(h[0] == 0x1f && h[1] == 0x8b), DataError, file,
                ": is gzip-compressed; shards must be plain .tar (gunzip it, or repack with vit-data pack)");
      VIT_THROW(DataError, file, pos == 0 ? ": is not a tar file (no valid tar header at the start)"
                                          : ": corrupt tar header at offset " + std::to_string(pos));
    }
    const char type = static_cast<char>(h[156]);
    int64_t size = parse_size(reinterpret_cast<const char*>(h) + 124);
    const int64_t data = pos + kBlock;
    if (data + size > file_size)
      return damaged(str("truncated inside a member (the member at offset ", pos, " needs ", size,
                         " bytes, the file ends first)"));
    if (type == 'x' || type == 'L') {
      const std::string payload = read_at(fd.fd, file, data, size);
      if (type == 'L') {
        long_name = std::string(payload.c_str());
      } else {
        parse_pax(payload, &long_name, &pax_size);
      }
    } else if (type == '0' || type == '\0' || type == '7') {
      std::string name = long_name;
      if (name.empty()) {
        name = field(h, 0, 100);
        const std::string prefix = std::memcmp(h + 257, "ustar", 5) == 0 ? field(h, 345, 155) : "";
        if (!prefix.empty()) name = prefix + "/" + name;
      }
      if (pax_size >= 0) size = pax_size;
      members.push_back({name, data, size});
      long_name.clear();
      pax_size = -1;
    } else if (type != 'g') {
      long_name.clear();
      pax_size = -1;
    }
    pos = data + (size + kBlock - 1) / kBlock * kBlock;
  }
  VIT_CHECK(pos == file_size || !members.empty(), DataError, file, ": is not a tar file");
  if (pos < file_size)
    return damaged(str("truncated inside a 512-byte header (", file_size - pos, " bytes of it at offset ", pos, ")"));
  return damaged("truncated at a member boundary (no end-of-archive blocks)");
}

TarWriter::TarWriter(const std::string& file) : file_(file) {
  out_ = std::fopen((file + ".tmp").c_str(), "wb");
  VIT_CHECK(out_ != nullptr, DataError, file, ".tmp: cannot create (", std::strerror(errno), ")");
}

TarWriter::~TarWriter() {
  if (out_ != nullptr) {
    std::fclose(out_);
    std::remove((file_ + ".tmp").c_str());
  }
}

void TarWriter::add(const std::string& name, const std::string& bytes) {
  VIT_CHECK(name.size() <= 100, DataError, "tar member name longer than 100 bytes: ", name);
  unsigned char h[kBlock] = {};
  std::memcpy(h, name.data(), name.size());
  std::snprintf(reinterpret_cast<char*>(h) + 100, 8, "%07o", 0644);
  std::snprintf(reinterpret_cast<char*>(h) + 108, 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(h) + 116, 8, "%07o", 0);
  std::snprintf(reinterpret_cast<char*>(h) + 124, 12, "%011llo", static_cast<unsigned long long>(bytes.size()));
  std::snprintf(reinterpret_cast<char*>(h) + 136, 12, "%011o", 0);
  h[156] = '0';
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(reinterpret_cast<char*>(h) + 148, 8, "%06o", sum);
  h[155] = ' ';
  const size_t pad = static_cast<size_t>((kBlock - bytes.size() % kBlock) % kBlock);
  const char zeros[kBlock] = {};
  const bool ok = std::fwrite(h, 1, kBlock, out_) == kBlock && std::fwrite(bytes.data(), 1, bytes.size(), out_) == bytes.size() &&
                  std::fwrite(zeros, 1, pad, out_) == pad;
  VIT_CHECK(ok, DataError, file_, ".tmp: write failed (disk full?)");
}

void TarWriter::close() {
  const char zeros[2 * kBlock] = {};
  VIT_CHECK(std::fwrite(zeros, 1, sizeof(zeros), out_) == sizeof(zeros) && std::fflush(out_) == 0 &&
                ::fsync(fileno(out_)) == 0,
            DataError, file_, ".tmp: write failed (disk full?)");
  std::fclose(out_);
  out_ = nullptr;
  std::filesystem::rename(file_ + ".tmp", file_);
}

}  // namespace vit::data

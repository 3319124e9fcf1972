// The tar format, as far as shards need it: list the regular-file members of a tar (name,
// data offset, size) by walking its 512-byte headers without reading the data, read one
// member's bytes, and write a ustar archive.
//
// Reads the ustar, pax ('x' records: path, size) and GNU long-name ('L') forms that Python's
// tarfile, GNU tar and webdataset's writers produce. Compressed tars (.tar.gz) are refused
// with a message; shards are plain tar so members can be read at an offset.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace vit::data {

struct TarMember {
  std::string name;    // path inside the archive
  int64_t offset = 0;  // of the data, from the start of the file
  int64_t size = 0;
};

// Throws DataError naming `file` when it is missing, not a tar or compressed. A damaged end (the
// file cut inside a member or a header, or ending without the two zero blocks that close an
// archive) throws as well, unless `damage` is given: then the members before the damage are
// returned and *damage says what is wrong and from which offset on members are lost.
std::vector<TarMember> list_tar(const std::string& file, std::string* damage = nullptr);

// Reads `size` bytes at `offset` (pread; safe from several threads).
std::string read_file_range(const std::string& file, int64_t offset, int64_t size);

class TarWriter {
 public:
  // Writes to `<file>.tmp` and renames it to `file` in close(), so readers never see half a shard.
  explicit TarWriter(const std::string& file);
  ~TarWriter();
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;
  void add(const std::string& name, const std::string& bytes);  // name: at most 100 bytes
  void close();

 private:
  std::string file_;
  std::FILE* out_ = nullptr;
};

}  // namespace vit::data

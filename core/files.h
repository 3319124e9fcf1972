// File helpers with the durability rules checkpoints rely on, and checksums.
//
// `write_file_atomic` writes to `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the
// directory, so a reader sees either the old file or the whole new one, never a torn write.
#pragma once

#include <cstdint>
#include <string>

namespace vit {

std::string read_file(const std::string& path);  // throws DataError naming the path
void write_file_atomic(const std::string& path, const std::string& bytes);
void fsync_directory(const std::string& dir);
// Removes a file or a directory tree; no error when it does not exist. (Not std::filesystem::
// remove_all: the LibTorch 2.11 wheel exports its own copy of it, which crashes when called.)
void remove_tree(const std::string& path);

// SHA-256 of a byte string, as 64 lowercase hex digits (checkpoint manifests).
std::string sha256_hex(const std::string& bytes);
// CRC-32C (Castagnoli), as TFRecord/TensorBoard event files need.
uint32_t crc32c(const void* data, size_t size);
// FNV-1a 64-bit: a cheap, stable hash (resolved-config comparison across ranks).
uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace vit

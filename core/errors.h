// Typed errors for user-facing failures, and the check macros that throw them.
//
// Every error names the file or YAML key involved and says what to change. They carry the
// source location (file:line) of the check for developers; `main` prints the message with the
// rank and exits non-zero. Nothing else catches them. `assert` stays for programmer mistakes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vit {

class Error : public std::runtime_error {
 public:
  Error(const std::string& kind, const std::string& message, const char* file, int line)
      : std::runtime_error(message), kind_(kind), where_(std::string(file) + ":" + std::to_string(line)) {}
  const std::string& kind() const { return kind_; }
  const std::string& where() const { return where_; }

 private:
  std::string kind_;
  std::string where_;
};

#define VIT_DEFINE_ERROR(Name)                                                  \
  class Name : public Error {                                                   \
   public:                                                                      \
    Name(const std::string& message, const char* file = "", int line = 0)       \
        : Error(#Name, message, file, line) {}                                  \
  };

VIT_DEFINE_ERROR(ConfigError)      // a YAML key, value or command-line flag is wrong
VIT_DEFINE_ERROR(DataError)        // a data file is missing, truncated or malformed
VIT_DEFINE_ERROR(CommError)        // a collective failed, timed out, or a peer died
VIT_DEFINE_ERROR(CheckpointError)  // a checkpoint is missing, uncommitted or corrupt
VIT_DEFINE_ERROR(ModelError)       // weights do not fit the model (names, shapes)
VIT_DEFINE_ERROR(IoError)          // writing to disk failed (disk full, permissions, a read-only file system)
#undef VIT_DEFINE_ERROR

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

// VIT_THROW(ConfigError, "model.depth: must be >= 1, got ", depth);
#define VIT_THROW(ErrorType, ...) throw ErrorType(::vit::detail::cat(__VA_ARGS__), __FILE__, __LINE__)

// VIT_CHECK(cond, DataError, "file ", path, " is truncated");
#define VIT_CHECK(cond, ErrorType, ...)  \
  do {                                   \
    if (!(cond)) {                       \
      VIT_THROW(ErrorType, __VA_ARGS__); \
    }                                    \
  } while (false)

}  // namespace vit

// Small string helpers shared by config parsing, logging and file formats.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/errors.h"

namespace vit {

// Concatenates anything printable with operator<<.
template <typename... Args>
std::string str(const Args&... args) {
  return detail::cat(args...);
}

std::vector<std::string> split(const std::string& text, char sep);
std::string join(const std::vector<std::string>& parts, const std::string& sep);
std::string trim(const std::string& text);
bool starts_with(const std::string& text, const std::string& prefix);
bool ends_with(const std::string& text, const std::string& suffix);

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);
// The candidate closest to `word`, or "" when none is plausibly a typo of it.
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

// "12.3 ms", "1.2 GB", "3m 05s": human-readable quantities for logs.
std::string format_duration(double seconds);
std::string format_count(double value);  // 1234567 -> "1.23M"

}  // namespace vit

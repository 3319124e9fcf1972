// A small JSON value: enough for safetensors headers, metrics.jsonl lines, checkpoint
// manifests and tar-shard metadata. Objects keep insertion order (stable files, readable
// diffs). Integers are kept exact as int64 alongside doubles, because safetensors offsets
// exceed 2^53 never in practice but must round-trip exactly.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace vit {

class Json {
 public:
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool v) : type_(Type::kBool), bool_(v) {}
  Json(int v) : type_(Type::kInt), int_(v) {}
  Json(int64_t v) : type_(Type::kInt), int_(v) {}
  Json(uint64_t v) : type_(Type::kInt), int_(static_cast<int64_t>(v)) {}
  Json(double v) : type_(Type::kDouble), double_(v) {}
  Json(const char* v) : type_(Type::kString), string_(v) {}
  Json(std::string v) : type_(Type::kString), string_(std::move(v)) {}
  Json(Array v) : type_(Type::kArray), array_(std::move(v)) {}
  Json(Object v) : type_(Type::kObject), object_(std::move(v)) {}
  static Json object() { return Json(Object{}); }
  static Json array() { return Json(Array{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_number() const { return type_ == Type::kInt || type_ == Type::kDouble; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors throw std::runtime_error on a type mismatch; callers wrap with their file name.
  int64_t as_int() const;
  double as_double() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  // Object access. `at` throws when missing; `find` returns nullptr.
  const Json& at(const std::string& key) const;
  const Json* find(const std::string& key) const;
  Json& operator[](const std::string& key);  // inserts null when missing
  void push_back(Json v);
  size_t size() const;

  std::string dump() const;  // compact, one line
  static Json parse(const std::string& text);  // throws std::runtime_error with the offset

 private:
  void dump_to(std::string& out) const;
  Type type_ = Type::kNull;
  bool bool_ = false;
  int64_t int_ = 0;
  double double_ = 0.0;
  std::string string_;
  Array array_;
  Object object_;
};

}  // namespace vit

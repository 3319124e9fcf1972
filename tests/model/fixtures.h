// Shared by the model library's unit tests (test_model.cpp, test_weights.cpp): small configs,
// a preset's config, error messages and a scratch directory.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/errors.h"
#include "core/json.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/transfer.h"
#include "model/vit.h"

namespace vit::model::testing {

// 32 px, patch 4 (grid 8x8), width 64, two blocks of four heads.
inline ModelConfig small_config(const std::string& head = "linear") {
  ModelConfig c;
  c.image_size = 32;
  c.patch_size = 4;
  c.width = 64;
  c.depth = 2;
  c.num_heads = 4;
  c.mlp_dim = 128;
  c.num_classes = 10;
  c.head = head;
  return c;
}

inline ModelConfig preset_config(const std::string& name, const std::string& head = "linear") {
  ModelConfig c;
  apply_preset(name, c);
  c.num_classes = 1000;
  c.head = head;
  return c;
}

inline int64_t built_numel(const ModelConfig& c) {
  VisionTransformer model(c);
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

inline torch::Tensor param(VisionTransformer& model, const std::string& name) {
  return model->named_parameters(true)[name];
}

// Runs `f`, expects it to throw E and returns the message.
template <typename E, typename F>
std::string error_message(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

// A fresh directory under /tmp, removed with its files at the end of the test. POSIX calls, not
// std::filesystem: the LibTorch 2.11 wheel exports its own std::filesystem symbols, and
// remove_all resolves to libtorch.so's copy and crashes.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/vit_model_test_XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

}  // namespace vit::model::testing

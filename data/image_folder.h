// ImageFolder: one sub-folder per class, class index = position of the folder name in sorted
// order (as torchvision's ImageFolder), files *.jpg / *.jpeg (any case) inside, in sorted order.
// Other files are ignored. A missing folder, a root without class folders or a class folder
// with no JPEG is a DataError naming the folder.
//
// `resolve_split_folder` maps data.path / data.eval_path to the folder of one split:
// a root with train/ and val/ (or test/) sub-folders serves both splits from data.path.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/source.h"

namespace vit::data {

class ImageFolderSource : public EncodedSource {
 public:
  explicit ImageFolderSource(const std::string& root);
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int64_t label(int64_t index) const override { return labels_[index]; }
  std::string read(int64_t index) const override;
  std::string name(int64_t index) const override { return files_[index]; }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }

 private:
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
};

// The folder of the requested split: eval_path when set for eval; else path/train (train) or
// path/val, path/test (eval) when those exist; else path itself for train.
std::string resolve_split_folder(const std::string& path, const std::string& eval_path, bool train);

}  // namespace vit::data

// ImageFolder listing and file reads (see image_folder.h).
#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>

#include "core/errors.h"
#include "core/files.h"
#include "core/strings.h"

namespace vit::data {
namespace fs = std::filesystem;
namespace {

bool is_jpeg_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg";
}

}  // namespace

ImageFolderSource::ImageFolderSource(const std::string& root) {
  VIT_CHECK(fs::is_directory(root), DataError, root,
            ": no such folder; data.path (or data.eval_path) must name an ImageFolder root");
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
  }
  std::sort(classes_.begin(), classes_.end());
  VIT_CHECK(!classes_.empty(), DataError, root, ": has no class sub-folders; ImageFolder expects <root>/<class>/*.jpg");
  for (size_t k = 0; k < classes_.size(); ++k) {
    const fs::path dir = fs::path(root) / classes_[k];
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && is_jpeg_name(entry.path())) files.push_back(entry.path().string());
    }
    VIT_CHECK(!files.empty(), DataError, dir.string(), ": class folder has no .jpg/.jpeg files; remove the folder or ",
              "add its images (class indices follow sorted folder names)");
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      files_.push_back(std::move(f));
      labels_.push_back(static_cast<int64_t>(k));
    }
  }
}

std::string ImageFolderSource::read(int64_t index) const { return read_file(files_[index]); }

std::string resolve_split_folder(const std::string& path, const std::string& eval_path, bool train) {
  if (!train && !eval_path.empty()) return eval_path;
  VIT_CHECK(fs::exists(path), DataError, "data.path: ", path, " does not exist");
  if (train) return fs::is_directory(fs::path(path) / "train") ? (fs::path(path) / "train").string() : path;
  for (const char* name : {"val", "test"}) {
    if (fs::is_directory(fs::path(path) / name)) return (fs::path(path) / name).string();
  }
  VIT_THROW(DataError, "data.eval_path: not set and ", path,
            " has no val/ or test/ folder; set data.eval_path to the evaluation split");
}

}  // namespace vit::data

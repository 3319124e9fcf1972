// A TensorBoard event-file writer for scalars, with no protobuf or TensorFlow dependency.
//
// Event files are TFRecord streams: each record is [uint64 length][uint32 masked crc32c of
// the length][payload][uint32 masked crc32c of the payload], and each payload is an `Event`
// protobuf. We encode the few protobuf fields we need by hand: Event.wall_time (1, double),
// Event.step (2, int64), Event.file_version (3, string) and Event.summary (5) holding
// Summary.value (1) entries of {tag (1, string), simple_value (2, float)}.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace vit::train {

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);  // creates dir and events.out.tfevents.<time>.<host>
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::ofstream out_;
};

}  // namespace vit::train

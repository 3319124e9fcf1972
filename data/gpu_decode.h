// JPEG decode on the GPU (data.decode): nvJPEG's batched decode into device memory, then the
// geometry step of augment.h (crop box, flip, resize to the model's size) by one kernel over
// the batch, into the uint8 [B, 3, H, W] batch the rest of the augmentation takes.
//
// nvJPEG is loaded at run time (dlopen of libnvjpeg.so.13: the copy CMake found at build time,
// else the library path), so one binary serves machines with and without it. The backend is
// the hardware decoder (NVJPG engines: A100, H100, H200) where the GPU has one, else the GPU
// hybrid one. What nvJPEG's batched decode refuses (progressive for the hardware backend, CMYK,
// 4:1:0 / 4:1:1 sub-sampling) is decoded on the calling thread by libjpeg-turbo and resampled by
// the same kernel; a batch nvJPEG fails on is decoded image by image there, so a corrupt file
// meets the same data.on_corrupt policy as on the CPU path.
//
// One GpuDecoder per loader, used by one thread (the loader's decode thread) at a time. Its work
// goes on a stream of its own (nvJPEG's buffers are reused batch after batch in that order) and
// is handed to the training thread through an event.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "data/augment.h"

namespace vit::data {

// One JPEG of a batch: its bytes, its full size (jpeg_info) and the geometry drawn for it.
struct GpuDecodeItem {
  int64_t slot = 0;  // index in the output batch
  std::string bytes;
  std::string name;  // for messages
  int64_t height = 0, width = 0;
  GeometryDraw draw;
};

class GpuDecoder {
 public:
  // The decoder for `device`, or null with `why_not` set (no CUDA build, no GPU, nvJPEG not
  // found or not usable), e.g. for the log line of data.decode=auto.
  static std::unique_ptr<GpuDecoder> open(torch::Device device, std::string* why_not);
  virtual ~GpuDecoder() = default;

  // "nvJPEG 13.3, hardware backend" (for the log).
  virtual std::string describe() const = 0;

  // Decodes `items` and writes each one's crop (draw.box, draw.flip) at out's size into its
  // slot of `out` (uint8 [B, 3, H, W] on the device). Returns the slots that did not decode
  // (corrupt or truncated files), each with the DataError message naming the file; the caller
  // applies data.on_corrupt. Call inside run_on_stream().
  struct Failure {
    int64_t slot;
    std::string message;
  };
  virtual std::vector<Failure> decode(std::vector<GpuDecodeItem>& items, torch::Tensor& out,
                                      Interpolation interpolation) = 0;

  // The hardware's ceiling for bench/data: `items` decoded whole into device memory by the
  // batched decoder, nothing else (no crop, no fallback); waits for the device. False when
  // nvJPEG refused the batch.
  virtual bool decode_only(const std::vector<GpuDecodeItem>& items) = 0;

  // Runs `work` (which queues device work and returns tensors) with the decoder's stream
  // current, then records an event; take() on the consuming thread makes its current stream
  // wait for that event and marks the tensors as used there.
  struct Handoff {
    std::vector<torch::Tensor> tensors;
    std::shared_ptr<void> event;
  };
  virtual Handoff run_on_stream(const std::function<std::vector<torch::Tensor>()>& work) = 0;
  virtual std::vector<torch::Tensor> take(Handoff& handoff) = 0;
};

}  // namespace vit::data

// GpuDecoder on nvJPEG (see gpu_decode.h). The library is opened with dlopen and its entry
// points looked up by name; nvjpeg.h gives only their types.
#include <dlfcn.h>
#include <nvjpeg.h>

#include <cstring>
#include <mutex>
#include <type_traits>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "core/errors.h"
#include "data/augment_kernels.h"
#include "data/gpu_decode.h"
#include "data/image.h"

namespace vit::data {
namespace {

struct NvjpegApi {
  decltype(&nvjpegGetProperty) get_property = nullptr;
  decltype(&nvjpegCreateExV2) create = nullptr;
  decltype(&nvjpegDestroy) destroy = nullptr;
  decltype(&nvjpegJpegStateCreate) state_create = nullptr;
  decltype(&nvjpegJpegStateDestroy) state_destroy = nullptr;
  decltype(&nvjpegJpegStreamCreate) stream_create = nullptr;
  decltype(&nvjpegJpegStreamDestroy) stream_destroy = nullptr;
  decltype(&nvjpegJpegStreamParseHeader) parse_header = nullptr;
  decltype(&nvjpegDecodeBatchedSupported) batched_supported = nullptr;
  decltype(&nvjpegDecodeBatchedInitialize) batched_initialize = nullptr;
  decltype(&nvjpegDecodeBatched) batched = nullptr;
  decltype(&nvjpegSetDeviceMemoryPadding) device_padding = nullptr;
  decltype(&nvjpegSetPinnedMemoryPadding) pinned_padding = nullptr;
  std::string path;
};

// The library where CMake found it at build time, then the loader's search path, then the
// CUDA toolkit's. Loaded once per process; null (with the reason) when none has the symbols.
const NvjpegApi* load_api(std::string* why_not) {
  static std::string error;
  static const NvjpegApi* api = []() -> NvjpegApi* {
    std::vector<std::string> candidates;
#ifdef VIT_NVJPEG_LIBRARY
    candidates.push_back(VIT_NVJPEG_LIBRARY);
#endif
    candidates.push_back("libnvjpeg.so.13");
    candidates.push_back("/usr/local/cuda/lib64/libnvjpeg.so.13");
    void* lib = nullptr;
    auto* out = new NvjpegApi();
    for (const auto& c : candidates) {
      if ((lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) {
        out->path = c;
        break;
      }
    }
    if (lib == nullptr) {
      error = "libnvjpeg.so.13 not found (tried " + candidates.front() + " and the library path)";
      delete out;
      return nullptr;
    }
    bool ok = true;
    auto bind = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (fn == nullptr) {
        ok = false;
        error = out->path + " has no " + name;
      }
    };
    bind(out->get_property, "nvjpegGetProperty");
    bind(out->create, "nvjpegCreateExV2");
    bind(out->destroy, "nvjpegDestroy");
    bind(out->state_create, "nvjpegJpegStateCreate");
    bind(out->state_destroy, "nvjpegJpegStateDestroy");
    bind(out->stream_create, "nvjpegJpegStreamCreate");
    bind(out->stream_destroy, "nvjpegJpegStreamDestroy");
    bind(out->parse_header, "nvjpegJpegStreamParseHeader");
    bind(out->batched_supported, "nvjpegDecodeBatchedSupported");
    bind(out->batched_initialize, "nvjpegDecodeBatchedInitialize");
    bind(out->batched, "nvjpegDecodeBatched");
    bind(out->device_padding, "nvjpegSetDeviceMemoryPadding");
    bind(out->pinned_padding, "nvjpegSetPinnedMemoryPadding");
    if (!ok) {
      delete out;
      return nullptr;
    }
    return out;
  }();
  if (api == nullptr && why_not != nullptr) *why_not = error;
  return api;
}

// Where each decoded image (interleaved RGB, full size) goes in one device buffer: its byte
// offset, 256-aligned; returns the buffer's size.
int64_t layout(const std::vector<GpuDecodeItem>& items, std::vector<int64_t>& offset) {
  offset.assign(items.size(), 0);
  int64_t total = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    offset[i] = total;
    total += (items[i].height * items[i].width * 3 + 255) / 256 * 256;
  }
  return total;
}

constexpr size_t kPadding = size_t{16} << 20;

// nvJPEG's memory comes from caches that give nothing back to the driver while the process
// runs: its default allocators call cudaFree / cudaFreeHost as buffers change size, and each
// of those waits for the whole device, training step included. Device memory: LibTorch's
// caching allocator, ordered on the stream nvJPEG names. Pinned memory: a pool whose blocks
// are reused once the work queued on their stream when they were freed has finished.
int device_malloc(void*, void** ptr, size_t size, cudaStream_t stream) {
  try {
    *ptr = c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(size, stream);
    return 0;
  } catch (...) {
    return 1;
  }
}

int device_free(void*, void* ptr, size_t, cudaStream_t) {
  c10::cuda::CUDACachingAllocator::raw_delete(ptr);
  return 0;
}

class PinnedPool {
 public:
  int allocate(void** ptr, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->size < size || (best != free_.end() && it->size >= best->size)) continue;
      const cudaError_t state = cudaEventQuery(it->released);
      if (state == cudaErrorNotReady) (void)cudaGetLastError();  // not an error: clear it
      if (state == cudaSuccess) best = it;
    }
    if (best != free_.end()) {
      *ptr = best->ptr;
      cudaEventDestroy(best->released);
      free_.erase(best);
      return 0;
    }
    return cudaHostAlloc(ptr, size, cudaHostAllocDefault) == cudaSuccess ? 0 : 1;
  }

  int release(void* ptr, size_t size, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    cudaEvent_t released = nullptr;
    if (cudaEventCreateWithFlags(&released, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(released, stream) != cudaSuccess) {
      return 1;
    }
    free_.push_back({ptr, size, released});
    return 0;
  }

 private:
  struct Block {
    void* ptr;
    size_t size;
    cudaEvent_t released;
  };
  std::mutex mutex_;
  std::vector<Block> free_;
};

PinnedPool& pinned_pool() {
  static auto* pool = new PinnedPool();  // outlives every handle (never destroyed)
  return *pool;
}

int pinned_malloc(void*, void** ptr, size_t size, cudaStream_t) { return pinned_pool().allocate(ptr, size); }
int pinned_free(void*, void* ptr, size_t size, cudaStream_t stream) {
  return pinned_pool().release(ptr, size, stream);
}

class NvjpegDecoder final : public GpuDecoder {
 public:
  NvjpegDecoder(const NvjpegApi* api, torch::Device device, nvjpegHandle_t handle, nvjpegBackend_t backend)
      : api_(api),
        device_(device),
        handle_(handle),
        backend_(backend),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {
    // nvJPEG grows its buffers when a batch needs more; padding makes that rare (each growth
    // is a cudaFree, which waits for the whole device, training included).
    check(api_->device_padding(kPadding, handle_), "setting its device memory padding");
    check(api_->pinned_padding(kPadding, handle_), "setting its pinned memory padding");
    check(api_->state_create(handle_, &state_), "creating a decode state");
    check(api_->stream_create(handle_, &parsed_), "creating a stream parser");
  }

  ~NvjpegDecoder() override {
    c10::cuda::CUDAGuard guard(device_);
    api_->stream_destroy(parsed_);
    api_->state_destroy(state_);
    api_->destroy(handle_);
  }

  std::string describe() const override {
    int major = 0, minor = 0;
    api_->get_property(MAJOR_VERSION, &major);
    api_->get_property(MINOR_VERSION, &minor);
    const char* name = backend_ == NVJPEG_BACKEND_HARDWARE     ? "hardware"
                       : backend_ == NVJPEG_BACKEND_GPU_HYBRID ? "GPU hybrid"
                                                               : "hybrid";
    return "nvJPEG " + std::to_string(major) + "." + std::to_string(minor) + ", " + name + " backend (" + api_->path +
           ")";
  }

  Handoff run_on_stream(const std::function<std::vector<torch::Tensor>()>& work) override {
    c10::cuda::CUDAGuard guard(device_);
    c10::cuda::CUDAStreamGuard on_stream(stream_);
    Handoff out;
    out.tensors = work();
    auto event = std::make_shared<at::cuda::CUDAEvent>();
    event->record(stream_);
    out.event = event;
    return out;
  }

  std::vector<torch::Tensor> take(Handoff& handoff) override {
    c10::cuda::CUDAGuard guard(device_);
    auto current = c10::cuda::getCurrentCUDAStream(device_.index());
    static_cast<at::cuda::CUDAEvent*>(handoff.event.get())->block(current);
    // Allocated on the decoder's stream: tell the allocator the current stream uses them too.
    for (auto& t : handoff.tensors) t.record_stream(current);
    handoff.event.reset();
    return std::move(handoff.tensors);
  }

  bool decode_only(const std::vector<GpuDecodeItem>& items) override {
    c10::cuda::CUDAGuard guard(device_);
    c10::cuda::CUDAStreamGuard on_stream(stream_);
    std::vector<size_t> all(items.size());
    for (size_t i = 0; i < items.size(); ++i) all[i] = i;
    std::vector<int64_t> offset;
    const bool ok = decode_batched(items, all, scratch(layout(items, offset)), offset, stream_);
    stream_.synchronize();
    return ok;
  }

  std::vector<Failure> decode(std::vector<GpuDecodeItem>& items, torch::Tensor& out,
                              Interpolation interpolation) override {
    c10::cuda::CUDAGuard guard(device_);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device_.index());
    std::vector<Failure> failures;
    // Which images nvJPEG's batched decode takes; the rest go to libjpeg-turbo on this thread.
    std::vector<size_t> on_gpu, on_cpu;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& item = items[i];
      if (!jpeg_complete(item.bytes)) {
        failures.push_back({item.slot, item.name + ": corrupt JPEG (truncated: no end-of-image marker)"});
        continue;
      }
      (supported(item) ? on_gpu : on_cpu).push_back(i);
    }
    std::vector<int64_t> offset;
    uint8_t* base = scratch(layout(items, offset));
    std::vector<char> decoded(items.size(), 0);
    if (!on_gpu.empty() && decode_batched(items, on_gpu, base, offset, stream)) {
      for (size_t i : on_gpu) decoded[i] = 1;
    } else {
      on_cpu.insert(on_cpu.end(), on_gpu.begin(), on_gpu.end());  // a failed batch: find the bad file
    }
    for (size_t i : on_cpu) {
      auto& item = items[i];
      try {
        Image image = decode_jpeg(item.bytes, item.name);
        VIT_CHECK(image.height == item.height && image.width == item.width, DataError, item.name,
                  ": decoded size differs from its header");
        auto host = torch::from_blob(image.pixels.data(), {static_cast<int64_t>(image.pixels.size())}, torch::kUInt8)
                        .pin_memory();
        current_->buffer.narrow(0, offset[i], host.numel()).copy_(host, /*non_blocking=*/true);
        decoded[i] = 1;
      } catch (const DataError& e) {
        failures.push_back({item.slot, e.what()});
      }
    }
    // The geometry step for every decoded image, in one launch.
    std::vector<kernels::ResizeJob> jobs;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!decoded[i]) continue;
      const auto& item = items[i];
      jobs.push_back({base + offset[i], item.width * 3, static_cast<int32_t>(item.height),
                      static_cast<int32_t>(item.width), item.draw.box.top, item.draw.box.left, item.draw.box.height,
                      item.draw.box.width, item.draw.flip ? 1 : 0, static_cast<int32_t>(item.slot)});
    }
    if (!jobs.empty()) {
      const auto bytes = static_cast<int64_t>(jobs.size() * sizeof(kernels::ResizeJob));
      auto host = torch::empty({bytes}, torch::TensorOptions(torch::kUInt8).pinned_memory(true));
      std::memcpy(host.data_ptr<uint8_t>(), jobs.data(), static_cast<size_t>(bytes));
      auto device_jobs = host.to(device_, /*non_blocking=*/true);
      C10_CUDA_CHECK(kernels::launch_crop_resize(
          reinterpret_cast<const kernels::ResizeJob*>(device_jobs.data_ptr<uint8_t>()),
          static_cast<int64_t>(jobs.size()), out.data_ptr<uint8_t>(), out.size(2), out.size(3),
          interpolation == Interpolation::kBicubic, stream));
    }
    current_->read = std::make_unique<at::cuda::CUDAEvent>();
    current_->read->record(stream_);
    return failures;
  }

 private:
  void check(nvjpegStatus_t status, const char* what) const {
    VIT_CHECK(status == NVJPEG_STATUS_SUCCESS, DataError, "nvJPEG failed ", what, " (status ", static_cast<int>(status),
              ")");
  }

  // The decoded images' buffer: two, used in turn, each grown with some headroom when a batch
  // needs more (so the allocator is not asked every batch). nvJPEG's hardware decoder writes
  // when it is called, not in stream order (it does not wait for the work already queued on
  // the stream): the host waits until the kernel that last read the buffer has run.
  uint8_t* scratch(int64_t bytes) {
    current_ = &scratch_[next_scratch_];
    next_scratch_ ^= 1;
    if (current_->read) current_->read->synchronize();
    if (!current_->buffer.defined() || current_->buffer.numel() < bytes) {
      current_->buffer = torch::Tensor();
      current_->buffer = torch::empty({std::max<int64_t>(bytes + bytes / 4, 1)},
                                      torch::TensorOptions(torch::kUInt8).device(device_));
    }
    return current_->buffer.data_ptr<uint8_t>();
  }

  // Whether the batched decode of this backend takes the image (the hardware decoder refuses
  // progressive files and some chroma sub-samplings); a header nvJPEG cannot parse goes to
  // libjpeg-turbo, which names what is wrong with it.
  bool supported(const GpuDecodeItem& item) {
    const auto* data = reinterpret_cast<const unsigned char*>(item.bytes.data());
    if (api_->parse_header(handle_, data, item.bytes.size(), parsed_) != NVJPEG_STATUS_SUCCESS) return false;
    int refused = 1;
    if (api_->batched_supported(handle_, parsed_, &refused) != NVJPEG_STATUS_SUCCESS) return false;
    return refused == 0;
  }

  bool decode_batched(const std::vector<GpuDecodeItem>& items, const std::vector<size_t>& which, uint8_t* base,
                      const std::vector<int64_t>& offset, cudaStream_t stream) {
    const int n = static_cast<int>(which.size());
    std::vector<const unsigned char*> data(which.size());
    std::vector<size_t> lengths(which.size());
    std::vector<nvjpegImage_t> dest(which.size());
    for (size_t k = 0; k < which.size(); ++k) {
      const auto& item = items[which[k]];
      data[k] = reinterpret_cast<const unsigned char*>(item.bytes.data());
      lengths[k] = item.bytes.size();
      dest[k] = nvjpegImage_t{};
      dest[k].channel[0] = base + offset[which[k]];
      dest[k].pitch[0] = static_cast<size_t>(item.width * 3);
    }
    // Initialised once per batch size (and after a failed batch), as nvJPEG asks.
    if (n != initialized_for_) {
      initialized_for_ = -1;
      if (api_->batched_initialize(handle_, state_, n, 1, NVJPEG_OUTPUT_RGBI) != NVJPEG_STATUS_SUCCESS) return false;
      initialized_for_ = n;
    }
    const bool ok =
        api_->batched(handle_, state_, data.data(), lengths.data(), dest.data(), stream) == NVJPEG_STATUS_SUCCESS;
    if (!ok) initialized_for_ = -1;
    return ok;
  }

  const NvjpegApi* api_;
  torch::Device device_;
  nvjpegHandle_t handle_ = nullptr;
  nvjpegBackend_t backend_;
  nvjpegJpegState_t state_ = nullptr;
  nvjpegJpegStream_t parsed_ = nullptr;
  c10::cuda::CUDAStream stream_;
  struct Scratch {
    torch::Tensor buffer;
    std::unique_ptr<at::cuda::CUDAEvent> read;  // recorded after the kernel that last read it
  };
  Scratch scratch_[2];
  Scratch* current_ = nullptr;
  int next_scratch_ = 0;
  int initialized_for_ = -1;  // the batch size nvjpegDecodeBatchedInitialize was last called with
};

}  // namespace

std::unique_ptr<GpuDecoder> GpuDecoder::open(torch::Device device, std::string* why_not) {
  if (!device.is_cuda()) {
    if (why_not != nullptr) *why_not = "the run is on the CPU";
    return nullptr;
  }
  const NvjpegApi* api = load_api(why_not);
  if (api == nullptr) return nullptr;
  c10::cuda::CUDAGuard guard(device);
  for (nvjpegBackend_t backend : {NVJPEG_BACKEND_HARDWARE, NVJPEG_BACKEND_GPU_HYBRID, NVJPEG_BACKEND_DEFAULT}) {
    nvjpegHandle_t handle = nullptr;
    nvjpegDevAllocatorV2_t device_allocator{device_malloc, device_free, nullptr};
    nvjpegPinnedAllocatorV2_t pinned_allocator{pinned_malloc, pinned_free, nullptr};
    if (api->create(backend, &device_allocator, &pinned_allocator, 0, &handle) == NVJPEG_STATUS_SUCCESS) {
      try {
        return std::make_unique<NvjpegDecoder>(api, device, handle, backend);
      } catch (const DataError& e) {
        api->destroy(handle);
        if (why_not != nullptr) *why_not = e.what();
      }
    }
  }
  if (why_not != nullptr && why_not->empty()) *why_not = "nvJPEG could not create a decoder on " + device.str();
  return nullptr;
}

}  // namespace vit::data

// GradSync: data-parallel gradient averaging, overlapped with backward.
//
// Note [Gradient buckets]
// Parameters (those that require grad) are grouped into buckets of about
// `distributed.bucket_mb` MiB, walking the registration order backwards (backward produces
// the last layers' gradients first) and starting a new bucket when the next parameter would
// overflow it or has another dtype. The plan depends only on names, shapes and dtypes, so it
// is identical on every rank. Each bucket owns one flat buffer; every parameter's .grad() is
// set to a view into it (offsets aligned to 16 bytes), so autograd accumulates straight into
// the buffer and the all-reduce needs no copy (and a fused optimiser sees plain tensors).
// A post hook on each parameter's AccumulateGrad node fires after its gradient has landed in
// the view; when the last gradient of a bucket has landed, that bucket's all-reduce (average)
// starts while backward goes on. Buckets start strictly in index order on every rank (a ready
// bucket waits for earlier ones), because collectives must be issued in the same order
// everywhere; buckets whose gradients never arrived (unused parameters) start in finish().
// With set_sync(false) hooks do nothing: micro-batches only accumulate into the buffers.
// On the MPI backend, hooks also poll the oldest in-flight bucket, which drives MPI progress.
// compress_bf16: the bucket is cast to a bf16 copy and averaged in bf16; finish() copies back.
// world_size 1: no hooks, no communication; grads are bucket views with keep_buffers (the
// default), autograd's own tensors without (what the trainer uses).
//
// Non-finite gradients need no extra collective: after finish() the averaged gradient is
// bitwise identical on every rank (a reduction's result is the same on every rank), so a grad
// norm computed afterwards is non-finite on all ranks or on none: every rank makes the same
// skip/stop decision locally. For a non-finite *loss* before backward, see any_nonfinite()
// in metrics.h.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/config.h"

namespace vit::dist {

struct GradSyncHooks;  // autograd hook records (grad_sync.cpp)

class GradSync {
 public:
  // Plans buckets and makes every parameter's grad a zeroed view into its bucket. Collective in
  // the weak sense: every rank must construct it with the same parameter list (names, shapes,
  // dtypes, order). Parameters must live on comm->device().
  //
  // keep_buffers = false with one process (nothing to communicate): no buckets at all; grads are
  // autograd's own tensors, freed by zero_grad() as PyTorch's zero_grad(set_to_none=True) does,
  // so they take no memory during the forward pass (where activation memory peaks). A captured
  // CUDA graph does without them too: the grads it allocates and frees live in its private pool,
  // at the same addresses on every replay.
  GradSync(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
           std::shared_ptr<Communicator> comm, const DistConfig& config, bool keep_buffers = true);
  ~GradSync();  // removes nothing from autograd: hooks become no-ops (see grad_sync.cpp)
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // false on non-final micro-batches of an accumulation: hooks do not communicate and the
  // gradients accumulate in the buffers. Set true before the backward of the last micro-batch.
  void set_sync(bool sync);
  bool sync() const { return sync_; }
  // Zeroes the bucket buffers in place (without buffers: sets grads to undefined); grads stay views (use this, not Module::zero_grad or
  // Optimizer::zero_grad, which set grads to undefined by default). Call after finish() and the
  // optimiser step, before the next backward.
  void zero_grad();
  // Starts the buckets not started yet, waits for all, averages (divide by world size). After it
  // returns, .grad() of every parameter is identical on every rank (on GPU: for work queued on
  // the current stream). Call once after the backward of the last micro-batch, before clipping
  // and the optimiser. Throws CommError (timeout, peer failure) and std::logic_error when
  // called with set_sync(false).
  void finish();

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // The flat gradient buffers, one per bucket (a fused optimiser or grad-norm can use them).
  std::vector<torch::Tensor> bucket_buffers() const;

  // The bucket plan alone: indices into `params`, reverse order, split by dtype and size.
  static std::vector<std::vector<size_t>> plan_buckets(const std::vector<torch::Tensor>& params,
                                                       int64_t bucket_bytes);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param;
    torch::Tensor view;  // param-shaped view into its bucket's buffer: the grad
    size_t bucket = 0;
    bool ready = false;  // gradient landed in this sync step
  };
  struct Bucket {
    std::vector<size_t> slots;
    torch::Tensor buffer;       // flat, the params' dtype and device
    torch::Tensor comm_buffer;  // bf16 copy in flight when compressing
    size_t pending = 0;         // gradients still to land in this sync step
    std::shared_ptr<Work> work;
  };

  void on_grad_ready(size_t slot);  // autograd's thread, from the AccumulateGrad post hook
  void launch_ready_buckets();      // starts buckets in index order while they are ready
  void launch(size_t bucket);
  void restore_view(Slot& slot);  // if something replaced .grad(), copy it back into the view
  void reset_step();

  std::shared_ptr<Communicator> comm_;
  bool compress_bf16_;
  bool communicate_;  // world_size > 1
  bool buffers_;      // buckets allocated, grads are views into them
  bool sync_ = true;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;  // first bucket not started in this sync step
  size_t next_poll_ = 0;    // oldest started bucket maybe still in flight (MPI progress)
  std::shared_ptr<bool> alive_;  // hooks outlive us in autograd; they check this
  std::unique_ptr<GradSyncHooks> hooks_;
  bool warned_replaced_ = false;
};

}  // namespace vit::dist

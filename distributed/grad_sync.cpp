// GradSync: bucket planning, gradient views, autograd hooks that start bucket all-reduces, and
// finish(). The reasoning is Note [Gradient buckets] in grad_sync.h.
//
// Threads: on CPU, autograd runs hooks on the thread that called backward(); on GPU, on
// autograd's device thread while backward() blocks the caller. Either way hooks and the
// caller's calls (zero_grad, finish) never overlap, so no locking is needed.
#include "distributed/grad_sync.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <stdexcept>

#include "core/errors.h"
#include "core/log.h"

namespace vit::dist {
namespace {

constexpr int64_t kAlignBytes = 16;  // vectorised kernels like aligned gradient views

int64_t aligned_numel(const torch::Tensor& t) {
  const int64_t align = std::max<int64_t>(1, kAlignBytes / static_cast<int64_t>(t.element_size()));
  return (t.numel() + align - 1) / align * align;
}

// AccumulateGrad nodes and the post hooks we put on them. Autograd holds a node only while a
// graph uses it, so we keep them alive (as c10d's reducer does) and remove our hooks on exit.
struct HookRecord {
  std::shared_ptr<torch::autograd::Node> accumulator;
  uintptr_t key;
};

}  // namespace

struct GradSyncHooks {
  std::vector<HookRecord> records;
};

std::vector<std::vector<size_t>> GradSync::plan_buckets(const std::vector<torch::Tensor>& params,
                                                        int64_t bucket_bytes) {
  std::vector<std::vector<size_t>> plan;
  int64_t filled = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const auto& p = params[k];
    const int64_t bytes = aligned_numel(p) * static_cast<int64_t>(p.element_size());
    const bool new_bucket = plan.empty() ||
                            params[plan.back().front()].scalar_type() != p.scalar_type() ||
                            filled + bytes > bucket_bytes;
    if (new_bucket) {
      plan.emplace_back();
      filled = 0;
    }
    plan.back().push_back(k);
    filled += bytes;
  }
  return plan;
}

GradSync::GradSync(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                   std::shared_ptr<Communicator> comm, const DistConfig& config, bool keep_buffers)
    : comm_(std::move(comm)),
      compress_bf16_(config.compress_bf16),
      communicate_(comm_->world_size() > 1),
      buffers_(communicate_ || keep_buffers),
      alive_(std::make_shared<bool>(true)) {
  std::vector<torch::Tensor> params;
  for (const auto& [name, param] : named_params) {
    if (!param.requires_grad()) continue;
    VIT_CHECK(param.is_leaf(), CommError, "GradSync: parameter ", name, " is not a leaf tensor");
    VIT_CHECK(param.is_floating_point(), CommError, "GradSync: parameter ", name, " has dtype ",
              param.scalar_type(), "; gradients need a floating-point dtype");
    VIT_CHECK(param.device() == comm_->device(), CommError, "GradSync: parameter ", name, " is on ",
              param.device().str(), " but the communicator works on ", comm_->device().str());
    slots_.push_back(Slot{name, param, {}, 0, false});
    params.push_back(param);
  }
  const auto bucket_bytes = static_cast<int64_t>(config.bucket_mb * 1024.0 * 1024.0);
  torch::NoGradGuard no_grad;
  if (!buffers_) {
    hooks_ = std::make_unique<GradSyncHooks>();
    zero_grad();
    return;
  }
  for (const auto& indices : plan_buckets(params, bucket_bytes)) {
    Bucket bucket;
    bucket.slots = indices;
    int64_t total = 0;
    for (size_t i : indices) total += aligned_numel(slots_[i].param);
    bucket.buffer = torch::zeros({total}, slots_[indices.front()].param.options().requires_grad(false));
    int64_t offset = 0;
    for (size_t i : indices) {
      Slot& slot = slots_[i];
      slot.bucket = buckets_.size();
      slot.view = bucket.buffer.narrow(0, offset, slot.param.numel()).view(slot.param.sizes());
      slot.param.mutable_grad() = slot.view;
      offset += aligned_numel(slot.param);
    }
    buckets_.push_back(std::move(bucket));
  }
  reset_step();

  hooks_ = std::make_unique<GradSyncHooks>();
  if (!communicate_) return;  // one process: nothing to overlap, no hooks
  for (size_t i = 0; i < slots_.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(slots_[i].param);
    const uintptr_t key = accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i, alive = alive_](const torch::autograd::variable_list& outputs,
                                  const torch::autograd::variable_list& /*inputs*/) {
          if (*alive) on_grad_ready(i);
          return outputs;
        }));
    hooks_->records.push_back(HookRecord{std::move(accumulator), key});
  }
}

GradSync::~GradSync() {
  *alive_ = false;
  for (auto& record : hooks_->records) record.accumulator->del_post_hook(record.key);
}

void GradSync::set_sync(bool sync) { sync_ = sync; }

void GradSync::zero_grad() {
  torch::NoGradGuard no_grad;
  if (!buffers_) {
    for (auto& slot : slots_) slot.param.mutable_grad() = torch::Tensor();
    return;
  }
  for (auto& bucket : buckets_) bucket.buffer.zero_();
  for (auto& slot : slots_) {
    const auto grad = slot.param.grad();
    if (!grad.defined() || grad.data_ptr() != slot.view.data_ptr()) slot.param.mutable_grad() = slot.view;
  }
}

void GradSync::on_grad_ready(size_t index) {
  if (!sync_) return;
  Slot& slot = slots_[index];
  restore_view(slot);
  if (slot.ready) {
    throw std::logic_error("GradSync: parameter " + slot.name +
                           " got a second gradient in one synchronised step (backward() twice "
                           "without finish()? use set_sync(false) on all but the last micro-batch)");
  }
  slot.ready = true;
  if (--buckets_[slot.bucket].pending == 0) launch_ready_buckets();
  // Drive progress of what is in flight (MPI progresses inside MPI calls only).
  while (next_poll_ < next_launch_ && buckets_[next_poll_].work->is_completed()) ++next_poll_;
}

void GradSync::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) launch(next_launch_++);
}

void GradSync::launch(size_t index) {
  Bucket& bucket = buckets_[index];
  torch::NoGradGuard no_grad;
  const AllreduceOptions average{ReduceOp::kAvg};
  if (compress_bf16_ && bucket.buffer.scalar_type() != torch::kBFloat16) {
    bucket.comm_buffer = bucket.buffer.to(torch::kBFloat16);
    bucket.work = comm_->allreduce(bucket.comm_buffer, average);
  } else {
    bucket.work = comm_->allreduce(bucket.buffer, average);
  }
}

void GradSync::finish() {
  if (!sync_) {
    throw std::logic_error("GradSync::finish() called with set_sync(false); call set_sync(true) "
                           "before the backward of the last micro-batch");
  }
  if (!buffers_) return;
  for (auto& slot : slots_) restore_view(slot);
  if (!communicate_) return;
  // Buckets whose gradients never arrived (unused parameters) start now, still in order.
  while (next_launch_ < buckets_.size()) launch(next_launch_++);
  torch::NoGradGuard no_grad;
  for (auto& bucket : buckets_) {
    bucket.work->wait();
    if (bucket.comm_buffer.defined()) {
      bucket.buffer.copy_(bucket.comm_buffer);  // on the current stream, after wait()
      bucket.comm_buffer = torch::Tensor();
    }
  }
  reset_step();
}

void GradSync::restore_view(Slot& slot) {
  const auto grad = slot.param.grad();
  if (grad.defined() && grad.data_ptr() == slot.view.data_ptr()) return;
  torch::NoGradGuard no_grad;
  if (grad.defined()) {
    slot.view.copy_(grad);
  } else {
    slot.view.zero_();
  }
  slot.param.mutable_grad() = slot.view;
  if (!warned_replaced_) {
    warned_replaced_ = true;
    log_warn("GradSync: the gradient of ", slot.name, " was replaced (zero_grad(set_to_none)?); "
             "copied it back into its bucket. Use GradSync::zero_grad() so grads stay bucket views");
  }
}

void GradSync::reset_step() {
  for (auto& slot : slots_) slot.ready = false;
  for (auto& bucket : buckets_) {
    bucket.pending = bucket.slots.size();
    bucket.work.reset();
  }
  next_launch_ = 0;
  next_poll_ = 0;
}

std::vector<torch::Tensor> GradSync::bucket_buffers() const {
  std::vector<torch::Tensor> buffers;
  for (const auto& bucket : buckets_) buffers.push_back(bucket.buffer);
  return buffers;
}

}  // namespace vit::dist

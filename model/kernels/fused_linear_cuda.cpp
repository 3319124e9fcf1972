// The fused linear backward (see fused_linear.h): one cuBLASLt GEMM with the BGRADB epilogue
// gives the weight gradient and the bias gradient, both fp32 (without the epilogue where another
// kernel computes the bias gradient). With autotuning on, the first call of each GEMM shape
// outside a CUDA graph capture times the candidates cuBLASLt's heuristic offers and keeps the
// fastest.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/errors.h"
#include "core/log.h"
#include "model/kernels/fused_linear.h"
#include "model/kernels/weight_casts.h"

namespace vit::model {
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_lt(cublasStatus_t status, const char* what) {
  VIT_CHECK(status == CUBLAS_STATUS_SUCCESS, ModelError, "fused linear: cuBLASLt ", what, " failed (status ",
            static_cast<int>(status), ")");
}

uint32_t alignment(const void* p) {  // the largest power of two dividing the address, up to 256
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && address % (2 * a) == 0) a *= 2;
  return a;
}

std::atomic<bool> autotune_on{true};
std::atomic<int> forced_choice{-1};  // tests: force_gemm_choice_for_tests

// Candidates the heuristic is asked for; rounds over all candidates and timed runs of each per
// round (a candidate's time is its fastest round: rounds in turn spread drifting clocks and load
// over all); how much faster than the heuristic's first choice another must be to replace it
// (keeps the choice stable where two are about as fast, the timing being noisy).
constexpr int kCandidates = 8;
constexpr int kRounds = 3;
constexpr int kRunsPerRound = 5;
constexpr float kMinGain = 0.03f;

// One weight-gradient GEMM shape: descriptors, the algorithms cuBLASLt's heuristic offers (its
// first choice first) and, once tuned, the fastest of them.
// In cuBLAS's column-major terms, with x [M, in] and grad_y [M, out] row-major:
//   D (in x out, = grad_W [out, in] row-major) = A (x as in x M) * op_T(B) (grad_y as out x M),
// k = M, and BGRADB reduces B over k: grad_b[o] = sum over rows of grad_y (with_bias only).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  // Empty: no algorithm for this shape (or none that ran), the unfused ops serve. Once timed, only
  // those that ran stay, in the heuristic's order.
  std::vector<cublasLtMatmulAlgo_t> candidates;
  int tuned = -1;  // index into candidates once timed; candidates.size(): ATen's mm
  std::string report;  // the timing, for the log
  bool found() const { return !candidates.empty(); }
  bool aten_tuned() const { return tuned == static_cast<int>(candidates.size()); }
  const cublasLtMatmulAlgo_t& algo(bool autotune) const {
    return candidates[autotune && tuned >= 0 && !aten_tuned() ? tuned : 0];
  }

  Plan(int64_t rows, int64_t in, int64_t out, uint32_t align_x, uint32_t align_grad, size_t workspace, bool with_bias) {
    try {
      create(rows, in, out, align_x, align_grad, workspace, with_bias);
    } catch (...) {
      release();  // a destructor does not run for a constructor that throws
      throw;
    }
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() { release(); }

 private:
  void create(int64_t rows, int64_t in, int64_t out, uint32_t align_x, uint32_t align_grad, size_t workspace,
              bool with_bias) {
    check_lt(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
    const cublasOperation_t op_n = CUBLAS_OP_N, op_t = CUBLAS_OP_T;
    check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_n, sizeof(op_n)), "transa");
    check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_t, sizeof(op_t)), "transb");
    if (with_bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BGRADB;
      const cudaDataType_t bias_type = CUDA_R_32F;
      check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
               "epilogue");
      check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                              sizeof(bias_type)),
               "bias type");
    }
    check_lt(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, in, rows, in), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, out, rows, out), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, in, out, in), "layout D");
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
    const uint64_t max_workspace = workspace;
    const uint32_t align_out = 256;  // grad_W and grad_b are fresh allocations
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                         sizeof(max_workspace));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_x, sizeof(align_x));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_grad,
                                         sizeof(align_grad));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_out, sizeof(align_out));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_out, sizeof(align_out));
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int returned = 0;
    const auto status = cublasLtMatmulAlgoGetHeuristic(at::cuda::getCurrentCUDABlasLtHandle(), desc, a, b, d, d, pref,
                                                       kCandidates, results, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    if (status != CUBLAS_STATUS_SUCCESS) return;
    for (int i = 0; i < returned; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS) candidates.push_back(results[i].algo);
    }
  }
  void release() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
    d = b = a = nullptr;
    desc = nullptr;
  }
};

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Times each candidate on the real operands (the call that follows overwrites the outputs) and
// keeps the fastest if it beats the heuristic's first choice by kMinGain. A candidate that fails
// to launch is dropped (with none left the unfused ops serve). aten (if given) is one more
// candidate after cuBLASLt's: ATen's own mm with fp32 output, which by default runs the kernel
// cuBLAS's heuristic picks (for w512's 512 x 512 projection about 31 us, against 61 us for every
// cuBLASLt candidate; docs/benchmarks.md). Waits for the stream: once per shape, outside a capture.
template <typename Matmul>
void tune(Plan& plan, const Matmul& matmul, const std::function<cublasStatus_t()>& aten,
          const at::cuda::CUDAStream& stream) {
  const size_t lt = plan.candidates.size(), n = lt + (aten ? 1 : 0);
  auto run = [&](size_t i) { return i < lt ? matmul(plan.candidates[i]) : aten(); };
  std::vector<float> ms(n, std::numeric_limits<float>::infinity());
  std::vector<bool> ok(n, true);
  for (size_t i = 0; i < n; ++i) ok[i] = run(i) == CUBLAS_STATUS_SUCCESS;  // warm-up
  stream.synchronize();  // earlier work in the stream must not count against the first one timed
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < n; ++i) {
      if (!ok[i]) continue;
      start.record(stream);
      for (int r = 0; r < kRunsPerRound && ok[i]; ++r) ok[i] = run(i) == CUBLAS_STATUS_SUCCESS;
      stop.record(stream);
      stop.synchronize();
      if (ok[i]) ms[i] = std::min(ms[i], start.elapsed_time(stop) / kRunsPerRound);
    }
  }
  std::vector<cublasLtMatmulAlgo_t> working;
  std::vector<float> working_ms;
  for (size_t i = 0; i < lt; ++i) {
    if (ok[i]) working.push_back(plan.candidates[i]), working_ms.push_back(ms[i]);
  }
  const bool aten_ok = aten && ok[lt];
  const size_t heuristic_count = lt;
  plan.candidates = working;
  if (aten_ok) working_ms.push_back(ms[lt]);
  if (working_ms.empty()) {  // nothing ran: the unfused ops from now on
    plan.report = "no candidate ran; ATen's unfused ops serve";
    return;
  }
  int best = 0;
  for (size_t i = 1; i < working_ms.size(); ++i) {
    if (working_ms[i] < working_ms[best]) best = static_cast<int>(i);
  }
  // The heuristic's first (that ran) stays unless another is kMinGain faster; ATen's mm alone
  // (no cuBLASLt candidate ran) is kept as it is.
  const bool keep_first = !plan.candidates.empty() && working_ms[best] > working_ms[0] * (1.f - kMinGain);
  plan.tuned = keep_first ? 0 : best;
  std::ostringstream report;
  report << std::fixed << std::setprecision(3) << (plan.aten_tuned() ? "ATen's mm" : "candidate ")
         << (plan.aten_tuned() ? std::string() : std::to_string(plan.tuned + 1) + " of " +
                                                     std::to_string(plan.candidates.size()))
         << ", " << working_ms[plan.tuned] << " ms";
  if (!plan.candidates.empty()) report << " (the heuristic's first: " << working_ms[0] << " ms";
  else report << " (no cuBLASLt candidate ran";
  if (aten_ok) report << ", ATen's mm: " << working_ms.back() << " ms";
  if (plan.candidates.size() < heuristic_count) report << ", " << heuristic_count - plan.candidates.size() << " failed";
  report << ")";
  plan.report = report.str();
}

// (device, rows, in, out, alignment of x, alignment of grad_y, workspace bytes, with bias)
using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, uint32_t, uint32_t, size_t, bool>;

// grad_W = grad_y^T x and, with_bias, grad_b = column sums of grad_y (else undefined), fp32.
// x2 [M, in], g2 [M, out]: bf16, contiguous.
std::pair<torch::Tensor, torch::Tensor> weight_bias_grads(const torch::Tensor& x2, const torch::Tensor& g2,
                                                          bool with_bias) {
  const int64_t rows = x2.size(0), in = x2.size(1), out = g2.size(1);
  const auto f32 = x2.options().dtype(torch::kFloat32);
  auto grad_w = torch::empty({out, in}, f32);
  auto grad_b = with_bias ? torch::empty({out}, f32) : torch::Tensor();
  if (rows == 0) return {grad_w.zero_(), with_bias ? grad_b.zero_() : grad_b};
  at::cuda::getCurrentCUDABlasHandle();  // sets up this stream's workspace where cuBLAS and Lt share one
  const size_t workspace = at::cuda::getCUDABlasLtWorkspaceSize();
  const PlanKey key{x2.get_device(), rows, in, out, alignment(x2.data_ptr()), alignment(g2.data_ptr()),
                    workspace, with_bias};
  // Plans live for the process (cuBLASLt objects must not be destroyed after CUDA shuts down).
  static auto* plans = new std::map<PlanKey, std::unique_ptr<Plan>>();
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);  // the bias pointer is set on the shared descriptor
  auto& plan = (*plans)[key];
  if (!plan) plan = std::make_unique<Plan>(rows, in, out, std::get<4>(key), std::get<5>(key), workspace, with_bias);
  auto unfused = [&]() -> std::pair<torch::Tensor, torch::Tensor> {  // the same values from two ATen calls
    static std::once_flag told;
    std::call_once(told, [&] {
      log_warn("fused linear: cuBLASLt has no weight-gradient GEMM for ", rows, " x ", in, " -> ", out,
               " (bf16 in, fp32 out", with_bias ? ", bias gradient" : "", "); such layers use ATen calls instead");
    });
    return {at::mm(g2.t(), x2, torch::kFloat32),
            with_bias ? g2.sum(0, /*keepdim=*/false, torch::kFloat32) : torch::Tensor()};
  };
  if (!plan->found() && !plan->aten_tuned()) return unfused();
  if (with_bias) {
    void* bias = grad_b.data_ptr();
    check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
             "bias pointer");
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  auto matmul = [&](const cublasLtMatmulAlgo_t& algo) {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(at::cuda::getCurrentCUDABlasLtHandle(), plan->desc, &alpha, x2.data_ptr(), plan->a,
                          g2.data_ptr(), plan->b, &beta, grad_w.data_ptr(), plan->d, grad_w.data_ptr(), plan->d,
                          &algo, at::cuda::getCUDABlasLtWorkspace(), workspace, stream);
  };
  // Without the bias gradient, ATen's mm with fp32 output is a candidate too (autocast's linear
  // runs its bf16-output form and then casts).
  std::function<cublasStatus_t()> aten;
  if (!with_bias) {
    aten = [&] {
      at::mm_out(grad_w, g2.t(), x2, torch::kFloat32);
      return CUBLAS_STATUS_SUCCESS;
    };
  }
  const int force = forced_choice.load();
  if (force != -1) {  // tests: a given candidate
    if ((force == kForceAtenMm && aten) || !plan->found()) {  // no cuBLASLt candidate ran: ATen's mm was kept
      aten();
    } else {
      const size_t i = std::min<size_t>(force >= 0 ? static_cast<size_t>(force) : 0, plan->candidates.size() - 1);
      check_lt(matmul(plan->candidates[i]), "matmul");
    }
    return {grad_w, grad_b};
  }
  const bool autotune = autotune_on.load();
  if (autotune && plan->tuned < 0) {
    if (!capturing(stream)) {
      tune(*plan, matmul, aten, stream);
      log_info("fused linear: weight-gradient GEMM ", rows, " x ", in, " -> ", out,
               with_bias ? " with bias gradient" : "", ": ", plan->report);
      if (!plan->found() && !plan->aten_tuned()) return unfused();
    } else {
      static std::once_flag told;
      std::call_once(told, [&] {
        log_warn("fused linear: weight-gradient GEMM ", rows, " x ", in, " -> ", out,
                 " first seen inside a CUDA graph capture keeps cuBLASLt's first choice (autotuning times only "
                 "outside a capture)");
      });
    }
  }
  if (!plan->found() || (autotune && plan->aten_tuned())) {  // (no cuBLASLt candidate ran: ATen's mm was kept)
    aten();
  } else {
    check_lt(matmul(plan->algo(autotune)), "matmul");
  }
  return {grad_w, grad_b};
}

struct LinearFn : public torch::autograd::Function<LinearFn> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, bool bias_grad) {
    // The casts autocast's linear makes (the weight and bias from the model's one-kernel casts
    // where they are in use, weight_casts.h); the bf16 copies are what backward reads.
    const auto dtype = at::autocast::get_autocast_dtype(at::kCUDA);
    const auto* casts = dtype == at::kBFloat16 ? active_weight_casts() : nullptr;
    auto w16 = casts ? casts->find(weight) : torch::Tensor(), b16 = casts ? casts->find(bias) : torch::Tensor();
    if (!w16.defined()) w16 = weight.to(dtype);
    if (!b16.defined()) b16 = bias.to(dtype);
    auto x16 = x.to(dtype).contiguous();
    auto y = at::linear(x16, w16, b16);
    ctx->save_for_backward({x16, w16});
    ctx->saved_data["bias_grad"] = bias_grad;
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x16 = saved[0];
    const auto& w16 = saved[1];
    c10::cuda::CUDAGuard guard(x16.device());
    const int64_t in = x16.size(-1), out = w16.size(0), rows = x16.numel() / in;
    auto g2 = grads[0].to(x16.scalar_type()).reshape({rows, out}).contiguous();
    torch::Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0)) grad_x = at::mm(g2, w16).view(x16.sizes());
    const bool bias_grad = ctx->saved_data["bias_grad"].toBool() && ctx->needs_input_grad(2);
    if (ctx->needs_input_grad(1) || bias_grad) {
      std::tie(grad_w, grad_b) = weight_bias_grads(x16.view({rows, in}), g2, bias_grad);
    }
    return {grad_x, grad_w, grad_b, torch::Tensor()};
  }
};

}  // namespace

void set_gemm_autotune(bool on) { autotune_on.store(on); }

void force_gemm_choice_for_tests(int choice) { forced_choice.store(choice); }

bool fused_linear_applies(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  return x.is_cuda() && torch::GradMode::is_enabled() && at::autocast::is_autocast_enabled(at::kCUDA) &&
         at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16 && weight.scalar_type() == torch::kFloat32 &&
         bias.defined() && bias.scalar_type() == torch::kFloat32;
}

torch::Tensor fused_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                           bool bias_grad) {
  VIT_CHECK(fused_linear_applies(x, weight, bias) && weight.dim() == 2 && x.dim() >= 1 &&
                x.size(-1) == weight.size(1) && bias.dim() == 1 && bias.size(0) == weight.size(0),
            ModelError, "fused linear: unsupported input ", x.sizes(), " ", x.scalar_type(), " on ", x.device().str(),
            " with weight ", weight.sizes(), " (check fused_linear_applies() first)");
  return LinearFn::apply(x, weight, bias, bias_grad)[0];
}

}  // namespace vit::model

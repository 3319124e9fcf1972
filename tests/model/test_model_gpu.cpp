// The fused residual + LayerNorm kernels (model/kernels/fused_norm.h), the GELU backward, attention
// heads gather and token embedding that sum bias (and pos_embed) gradients (model/kernels/fused_bias_sums.h) and the fused linear backward
// (model/kernels/fused_linear.h) against ATen's ops; the model with them: test_model_gpu_model.cpp.
// Needs a GPU; skips with a reason without one.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/kernels/bias_sum_kernels.h"
#include "model/kernels/fused_bias_sums.h"
#include "model/kernels/fused_linear.h"
#include "model/kernels/fused_norm.h"
#include "model/vit.h"
#include "model/kernels/weight_casts.h"
#include "gpu_fixtures.h"

namespace vit::model {
namespace {

using namespace testing;


struct Case {
  int64_t width;
  bool branch;
  bool scale;
  int64_t batch = 3, tokens = 17;
  bool misaligned = false;  // residual starts 4 bytes into its storage: the scalar layout must serve
  bool branch_bias = true;  // with a branch: also sum the branch gradient (the branch Linear's bias gradient)
};

TEST(FusedNorm, MatchesAtenForwardAndBackward) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(0);
  const auto dev = torch::Device(torch::kCUDA);
  const auto f32 = torch::TensorOptions().device(dev).dtype(torch::kFloat32);
  for (Case c : {Case{64, false, false}, Case{384, true, false}, Case{384, true, true}, Case{500, true, true},
                 Case{768, true, true}, Case{1024, false, false}, Case{40, true, true},
                 // More rows than one wave of warps: each warp loops over rows and accumulates.
                 Case{384, true, true, 64, 197}, Case{768, true, false, 64, 197},
                 // Vector layout with a partly used group of lanes, and its scalar fallback.
                 Case{640, true, true}, Case{384, true, true, 3, 17, true}, Case{256, false, false, 3, 17, true},
                 // A branch without its bias sum.
                 Case{768, true, true, 64, 197, false, false}}) {
    const bool bias_sum = c.branch && c.branch_bias;
    SCOPED_TRACE("width " + std::to_string(c.width) + (c.branch ? " branch" : "") + (c.scale ? " scale" : "") +
                 " rows " + std::to_string(c.batch * c.tokens) + (c.misaligned ? " misaligned" : "") +
                 (bias_sum ? " bias-sum" : ""));
    const int64_t B = c.batch, N = c.tokens, D = c.width;
    torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({D}).eps(1e-6));
    norm->to(dev);
    {
      torch::NoGradGuard no_grad;
      norm->weight.normal_(1.0, 0.3);
      norm->bias.normal_(0.0, 0.3);
    }
    auto residual = c.misaligned ? (torch::randn({B * N * D + 1}, f32) * 2 + 0.5).narrow(0, 1, B * N * D).view({B, N, D})
                                 : torch::randn({B, N, D}, f32) * 2 + 0.5;
    residual = residual.detach().requires_grad_(true);
    auto branch = torch::randn({B, N, D}, f32).to(torch::kBFloat16).requires_grad_(true);
    auto scale = c.scale ? torch::tensor({0.0f, 1.25f, 1.0f}, f32).repeat({(B + 2) / 3}).narrow(0, 0, B).contiguous()
                         : torch::Tensor();
    auto grad_normed = torch::randn({B, N, D}, f32).to(torch::kBFloat16);
    auto grad_sum = torch::randn({B, N, D}, f32);
    auto branch_bias = torch::zeros({D}, f32).requires_grad_(true);

    // Reference: ATen ops in fp32, the LayerNorm output rounded to bf16 once.
    auto r_res = residual.detach().clone().requires_grad_(true);
    auto r_branch = branch.detach().clone().requires_grad_(true);
    torch::Tensor r_sum = r_res;
    if (c.branch) {
      auto b = r_branch.to(torch::kFloat32);
      if (c.scale) b = b * scale.view({B, 1, 1});
      r_sum = r_res + b;
    }
    auto r_norm = torch::layer_norm(r_sum, {D}, norm->weight, norm->bias, 1e-6);
    auto r_loss = (r_norm * grad_normed.to(torch::kFloat32)).sum();
    if (c.branch) r_loss = r_loss + (r_sum * grad_sum).sum();
    auto r_grads = torch::autograd::grad({r_loss}, {r_res, r_branch, norm->weight, norm->bias, r_sum}, {}, false,
                                         false, /*allow_unused=*/true);

    torch::Tensor sum, normed;
    if (c.branch) {
      std::tie(sum, normed) =
          fused_add_layer_norm(residual, branch, scale, norm, bias_sum ? branch_bias : torch::Tensor());
    } else {
      normed = fused_layer_norm(residual, norm);
    }
    ASSERT_EQ(normed.scalar_type(), torch::kBFloat16);
    if (c.branch) {
      EXPECT_LT(max_rel(sum, r_sum), 1e-6);
    }
    // bf16 output: at most one rounding step apart (summation order can flip a tie).
    auto diff = (normed.to(torch::kFloat32) - r_norm.to(torch::kBFloat16).to(torch::kFloat32)).abs();
    EXPECT_LE(diff.max().item<double>(), r_norm.abs().max().item<double>() / 128.0);
    EXPECT_LT(diff.gt(0).to(torch::kFloat32).mean().item<double>(), 0.01);

    auto loss = (normed.to(torch::kFloat32) * grad_normed.to(torch::kFloat32)).sum();
    if (c.branch) loss = loss + (sum * grad_sum).sum();
    auto grads = torch::autograd::grad({loss}, {residual, branch, norm->weight, norm->bias, branch_bias}, {}, false,
                                       false, /*allow_unused=*/true);
    EXPECT_LT(max_rel(grads[0], r_grads[0]), 1e-4) << "residual";
    if (c.branch) {
      ASSERT_EQ(grads[1].scalar_type(), torch::kBFloat16);
      EXPECT_LT(max_rel(grads[1], r_grads[1]), 1e-2) << "branch (bf16)";
      if (c.scale) {
        EXPECT_EQ(grads[1][0].abs().max().item<double>(), 0.0) << "dropped sample has a branch gradient";
      }
    } else {
      EXPECT_FALSE(grads[1].defined());
    }
    EXPECT_LT(max_rel(grads[2], r_grads[2]), 1e-4) << "weight";
    EXPECT_LT(max_rel(grads[3], r_grads[3]), 1e-4) << "bias";
    if (bias_sum) {
      // The branch gradient in fp32 (the sum's gradient times the drop-path factor), summed per column.
      auto g = c.scale ? r_grads[4] * scale.view({B, 1, 1}) : r_grads[4];
      ASSERT_TRUE(grads[4].defined());
      EXPECT_LT(max_rel(grads[4], g.to(torch::kFloat64).sum(std::vector<int64_t>{0, 1})), 1e-4) << "branch bias";
    } else {
      EXPECT_FALSE(grads[4].defined());
    }
  }
}

// ATen's gelu forward, its GELU backward formula (bf16 out) and the column sums of the fp32
// input gradient: the bias gradient of the Linear before it.
TEST(FusedGelu, MatchesAtenGeluAndSumsTheBiasGradient) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(2);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  // Widths: ViT-B/16's MLP, a partly used column strip, two strips with a partial second, one
  // vector; rows: more and fewer than the row blocks.
  for (auto [rows, width] : std::vector<std::pair<int64_t, int64_t>>{
           {64 * 197, 3072}, {3 * 17, 1536}, {1000, 1032}, {5, 8}, {40000, 512}}) {
    SCOPED_TRACE("rows " + std::to_string(rows) + " width " + std::to_string(width));
    ASSERT_TRUE(fused_gelu_supported(width));
    auto x = (torch::randn({rows, width}, f32) * 2).to(torch::kBFloat16).requires_grad_(true);
    auto bias = torch::zeros({width}, f32).requires_grad_(true);
    auto grad_y = (torch::randn({rows, width}, f32) + 0.1).to(torch::kBFloat16);  // non-zero column means
    auto y = fused_gelu(x, bias);
    EXPECT_TRUE(torch::equal(y, at::gelu(x.detach()))) << "forward: ATen's gelu";
    auto grads = torch::autograd::grad({y}, {x, bias}, {grad_y});
    ASSERT_EQ(grads[0].scalar_type(), torch::kBFloat16);
    auto want_x = at::gelu_backward(grad_y, x.detach());
    // bf16 output: at most one rounding step apart (expf / erff may differ in the last fp32 bit).
    auto diff = (grads[0].to(torch::kFloat32) - want_x.to(torch::kFloat32)).abs();
    EXPECT_LE(diff.max().item<double>(), want_x.to(torch::kFloat32).abs().max().item<double>() / 128.0);
    EXPECT_LT(diff.gt(0).to(torch::kFloat32).mean().item<double>(), 0.01);
    auto exact_b = at::gelu_backward(grad_y.to(torch::kFloat64), x.detach().to(torch::kFloat64)).sum(0);
    ASSERT_EQ(grads[1].scalar_type(), torch::kFloat32);
    EXPECT_LT(max_rel(grads[1], exact_b), 1e-4) << "bias";
  }
  // create_graph: the bias gradient is differentiable; d(sum of it) / d(grad_y) = GELU'(x).
  auto x = torch::randn({33, 64}, f32).to(torch::kBFloat16).requires_grad_(true);
  auto bias = torch::zeros({64}, f32).requires_grad_(true);
  auto grad_y = torch::randn({33, 64}, f32).requires_grad_(true);
  auto bias_grad = torch::autograd::grad({fused_gelu(x, bias)}, {bias}, {grad_y.to(torch::kBFloat16)},
                                         /*retain_graph=*/true, /*create_graph=*/true)[0];
  auto d_grad_y = torch::autograd::grad({bias_grad.sum()}, {grad_y})[0];
  auto slope = at::gelu_backward(torch::ones({33, 64}, f32), x.detach().to(torch::kFloat32));
  // grad_y reaches the kernel as bf16, so its gradient is the slope rounded to bf16.
  EXPECT_LT(max_rel(d_grad_y, slope), 1.0 / 128) << "double backward through the bias sum";
}

// cat(cls, patch tokens) + pos_embed in fp32 (timm's under autocast); backward: the patch
// tokens' gradient rounded to bf16 as autograd's cast does (equal), pos_embed's and cls_token's
// against fp64 sums over the images. Shapes: ViT-B/16's and w512's token grids, a batch of one,
// the smallest width, a misaligned input (the unfused path), and a double backward.
TEST(FusedTokens, MatchesCatAndAddAndSumsThePositionGradient) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(4);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  struct Shape {
    int64_t batch, tokens, width;
    bool misaligned;
  };
  for (const Shape& c : {Shape{8, 197, 768, false}, Shape{64, 65, 512, false}, Shape{1, 5, 16, false},
                         Shape{3, 2, 8, false}, Shape{5, 17, 24, true}}) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + " tokens " + std::to_string(c.tokens) + " width " +
                 std::to_string(c.width) + (c.misaligned ? " misaligned" : ""));
    ASSERT_TRUE(fused_tokens_supported(c.width));
    const int64_t n = c.batch * (c.tokens - 1) * c.width;
    auto storage = torch::randn({n + 4}, f32).to(torch::kBFloat16);
    auto patches = storage.narrow(0, c.misaligned ? 4 : 0, n).view({c.batch, c.tokens - 1, c.width}).detach();
    patches.requires_grad_(true);
    auto cls = (torch::randn({1, 1, c.width}, f32) * 0.5).requires_grad_(true);
    auto pos = (torch::randn({1, c.tokens, c.width}, f32) * 0.1).requires_grad_(true);
    auto grad = torch::randn({c.batch, c.tokens, c.width}, f32) + 0.3;  // non-zero means over the images
    if (!c.misaligned) {  // the kernels' path, not ATen's fallback (the same values)
      EXPECT_TRUE(kernels::tokens_forward_supported({static_cast<const uint16_t*>(patches.data_ptr()),
                                                     cls.data_ptr<float>(), pos.data_ptr<float>(), nullptr,
                                                     c.batch, c.tokens, c.width}));
      EXPECT_TRUE(kernels::tokens_backward_supported({grad.data_ptr<float>(), nullptr, nullptr, c.batch,
                                                      c.tokens, c.width}));
    } else {  // the incoming gradient misaligned too: the backward's fallback
      auto buffer = torch::empty({grad.numel() + 1}, f32);
      grad = buffer.narrow(0, 1, grad.numel()).view(grad.sizes()).copy_(grad);
    }
    auto y = fused_tokens(patches, cls, pos);
    auto want = torch::cat({cls.detach().expand({c.batch, -1, -1}), patches.detach().to(torch::kFloat32)}, 1) +
                pos.detach();
    ASSERT_EQ(y.scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(y, want)) << "forward";
    auto g = torch::autograd::grad({y}, {patches, cls, pos}, {grad});
    ASSERT_EQ(g[0].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(g[0], grad.narrow(1, 1, c.tokens - 1).to(torch::kBFloat16))) << "patch tokens";
    auto exact_pos = grad.to(torch::kFloat64).sum(0, /*keepdim=*/true);
    EXPECT_LT(max_rel(g[2], exact_pos), 1e-5) << "pos_embed";
    EXPECT_LT(max_rel(g[1], exact_pos.narrow(1, 0, 1)), 1e-5) << "cls_token";
    EXPECT_EQ(g[1].sizes(), cls.sizes());
    EXPECT_EQ(g[2].sizes(), pos.sizes());
  }
  {  // frozen cls_token and pos_embed: the patch tokens' gradient alone
    auto patches = torch::randn({4, 9, 16}, f32).to(torch::kBFloat16).requires_grad_(true);
    auto grad = torch::randn({4, 10, 16}, f32);
    auto g = torch::autograd::grad({fused_tokens(patches, torch::zeros({1, 1, 16}, f32), torch::zeros({1, 10, 16}, f32))},
                                   {patches}, {grad})[0];
    EXPECT_TRUE(torch::equal(g, grad.narrow(1, 1, 9).to(torch::kBFloat16))) << "frozen cls_token and pos_embed";
  }
  // create_graph: pos_embed's gradient is differentiable; d(sum of it) / d(grad) = ones.
  auto patches = torch::randn({4, 9, 16}, f32).to(torch::kBFloat16).requires_grad_(true);
  auto cls = torch::zeros({1, 1, 16}, f32).requires_grad_(true);
  auto pos = torch::zeros({1, 10, 16}, f32).requires_grad_(true);
  auto grad = torch::randn({4, 10, 16}, f32).requires_grad_(true);
  auto pos_grad = torch::autograd::grad({fused_tokens(patches, cls, pos)}, {pos}, {grad}, /*retain_graph=*/true,
                                        /*create_graph=*/true)[0];
  auto d_grad = torch::autograd::grad({pos_grad.sum()}, {grad})[0];
  EXPECT_TRUE(torch::equal(d_grad, torch::ones_like(grad))) << "double backward through the position sums";
}

// q, k, v views as timm's permute + unbind; backward: the same gradient as autograd's through
// those ops (a copy: equal), the qkv bias gradient against fp64 column sums. Incoming gradients
// contiguous, strided and unaligned (the copies' path), one output unused (autograd hands zeros),
// a frozen bias, and a double backward through the bias sum.
TEST(FusedSplitHeads, MatchesUnbindAndSumsTheBiasGradient) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(6);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  struct Shape {
    int64_t B, N, H, Dh;
  };
  for (const Shape& c : {Shape{2, 17, 3, 64}, Shape{8, 197, 12, 64}, Shape{3, 5, 2, 8}, Shape{2, 65, 6, 32}}) {
    SCOPED_TRACE("B " + std::to_string(c.B) + " N " + std::to_string(c.N) + " H " + std::to_string(c.H) + " Dh " +
                 std::to_string(c.Dh));
    ASSERT_TRUE(fused_split_heads_supported(c.Dh));
    auto qkv = torch::randn({c.B, c.N, 3, c.H, c.Dh}, f32).to(torch::kBFloat16).requires_grad_(true);
    auto bias = torch::zeros({3 * c.H * c.Dh}, f32).requires_grad_(true);
    auto ref = qkv.detach().clone().requires_grad_(true);
    auto gq = torch::randn({c.B, c.H, c.N, c.Dh}, f32).to(torch::kBFloat16);
    auto gk = torch::randn({c.B, c.N, c.H, c.Dh}, f32).to(torch::kBFloat16).transpose(1, 2);  // strided
    auto gv = (torch::randn({c.B, c.H, c.N, c.Dh}, f32) + 0.3).to(torch::kBFloat16);
    for (bool all : {true, false}) {
      SCOPED_TRACE(all ? "q, k, v used" : "k unused");
      auto parts = fused_split_heads(qkv, bias);
      auto r_parts = ref.permute({2, 0, 3, 1, 4}).unbind(0);
      for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(parts[i], r_parts[i])) << "view " << i;
      std::vector<torch::Tensor> outs{parts[0], parts[2]}, r_outs{r_parts[0], r_parts[2]}, g{gq, gv};
      if (all) outs = parts, r_outs = r_parts, g = {gq, gk, gv};
      auto grads = torch::autograd::grad(outs, {qkv, bias}, g);
      auto r_grad = torch::autograd::grad(r_outs, {ref}, g)[0];
      ASSERT_EQ(grads[0].scalar_type(), torch::kBFloat16);
      EXPECT_TRUE(torch::equal(grads[0], r_grad)) << "qkv gradient";
      auto exact = r_grad.to(torch::kFloat64).reshape({c.B * c.N, 3 * c.H * c.Dh}).sum(0);
      ASSERT_EQ(grads[1].scalar_type(), torch::kFloat32);
      EXPECT_LT(max_rel(grads[1], exact), 1e-5) << "bias";
    }

    // An incoming gradient 2 bytes off 16-byte alignment: the copies serve, same values.
    const int64_t n = c.B * c.H * c.N * c.Dh;
    auto gq_odd = torch::randn({n + 1}, f32).to(torch::kBFloat16).narrow(0, 1, n).view({c.B, c.H, c.N, c.Dh});
    auto odd = torch::autograd::grad(fused_split_heads(qkv, bias), {qkv, bias}, {gq_odd, gk, gv});
    auto r_odd = torch::autograd::grad(ref.permute({2, 0, 3, 1, 4}).unbind(0), {ref}, {gq_odd, gk, gv})[0];
    EXPECT_TRUE(torch::equal(odd[0], r_odd)) << "qkv gradient, unaligned dq";
    EXPECT_LT(max_rel(odd[1], r_odd.to(torch::kFloat64).reshape({c.B * c.N, -1}).sum(0)), 1e-5) << "bias, unaligned dq";

    // A frozen bias: the qkv gradient alone.
    auto frozen = torch::zeros({3 * c.H * c.Dh}, f32);
    auto g_frozen = torch::autograd::grad(fused_split_heads(qkv, frozen), {qkv}, {gq, gk, gv})[0];
    auto r_frozen = torch::autograd::grad(ref.permute({2, 0, 3, 1, 4}).unbind(0), {ref}, {gq, gk, gv})[0];
    EXPECT_TRUE(torch::equal(g_frozen, r_frozen)) << "qkv gradient, frozen bias";

    // create_graph: the bias gradient is differentiable; d(sum of it) / d(dq) = 1 everywhere.
    auto gq_var = gq.to(torch::kFloat32).requires_grad_(true);
    auto second = torch::autograd::grad(fused_split_heads(qkv, bias), {bias}, {gq_var.to(torch::kBFloat16), gk, gv},
                                        /*retain_graph=*/true, /*create_graph=*/true)[0];
    auto d_gq = torch::autograd::grad({second.sum()}, {gq_var})[0];
    EXPECT_TRUE(torch::equal(d_gq, torch::ones_like(d_gq))) << "double backward through the bias sum";
  }
}

// Under bf16 autocast, against autocast's at::linear: the same output and input gradient, and
// weight / bias gradients at least as close to the exact (fp64) gradient of the bf16 operands.
TEST(FusedLinear, MatchesAutocastLinear) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(1);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  struct Shape {
    std::vector<int64_t> x;  // [..., in]
    int64_t out;
    bool x_bf16, x_grad;
  };
  // The heuristic's first algorithm, the one autotuning keeps (the first call of each shape times
  // the candidates; every later GEMM of that shape runs on the chosen one), then each of the
  // candidates in turn and ATen's mm (forced), so every path runs whichever wins on this GPU.
  struct Choice {
    std::string name;
    bool autotune;
    int force;
  };
  std::vector<Choice> choices{{"the heuristic's GEMM", false, -1}, {"the autotuned GEMM", true, -1},
                              {"ATen's mm (forced)", true, kForceAtenMm}};
  for (int i = 1; i < 8; ++i) choices.push_back({"candidate " + std::to_string(i + 1) + " (forced)", true, i});
  struct Restore {  // the process-wide defaults for the tests after this one, even after a failure
    ~Restore() {
      force_gemm_choice_for_tests(-1);
      set_gemm_autotune(true);
    }
  } restore;
  for (const Choice& choice : choices) {
    set_gemm_autotune(choice.autotune);
    force_gemm_choice_for_tests(choice.force);
    SCOPED_TRACE(choice.name);
    for (const Shape& c : {Shape{{3, 17, 384}, 1152, true, true}, Shape{{64, 197, 768}, 3072, true, true},
                           Shape{{256, 197, 768}, 768, true, true},  // ViT-B/16's attn.proj: long k, narrow output
                           Shape{{512, 65, 512}, 512, true, true},   // w512's attn.proj (ATen's mm may win)
                           Shape{{4, 50, 40}, 24, false, true},        // odd sizes, fp32 input (autocast casts)
                           Shape{{8, 196, 48}, 512, false, false},     // patch embedding: no input gradient
                           Shape{{7, 384}, 10, true, true}}) {         // a head: 2-D, narrow output
      SCOPED_TRACE("x " + c10::str(c10::IntArrayRef(c.x)) + " out " + std::to_string(c.out));
      const int64_t in = c.x.back();
      auto weight = (torch::randn({c.out, in}, f32) * 0.05).requires_grad_(true);
      auto bias = (torch::randn({c.out}, f32) * 0.1 + 0.3).requires_grad_(true);
      auto x = torch::randn(c.x, f32);
      if (c.x_bf16) x = x.to(torch::kBFloat16);
      x.requires_grad_(c.x_grad);
      auto out_shape = c.x;
      out_shape.back() = c.out;
      auto grad_y = (torch::randn(out_shape, f32) + 0.2).to(torch::kBFloat16);  // a non-zero mean per column

      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      ASSERT_TRUE(fused_linear_applies(x, weight, bias));
      auto run = [&](bool fused) {
        auto y = fused ? fused_linear(x, weight, bias) : at::linear(x, weight, bias);
        std::vector<torch::Tensor> inputs{weight, bias};
        if (c.x_grad) inputs.push_back(x);
        auto grads = torch::autograd::grad({y}, inputs, {grad_y});
        return std::make_pair(y, grads);
      };
      auto [y, g] = run(true);
      auto [r_y, r_g] = run(false);
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();

      EXPECT_TRUE(torch::equal(y, r_y)) << "forward: autocast's own linear";
      ASSERT_EQ(g[0].scalar_type(), torch::kFloat32);
      ASSERT_EQ(g[1].scalar_type(), torch::kFloat32);
      // Exact gradients of the bf16 operands autocast multiplies.
      auto g64 = grad_y.to(torch::kFloat64).reshape({-1, c.out});
      auto x64 = x.detach().to(torch::kBFloat16).to(torch::kFloat64).reshape({-1, in});
      auto exact_w = g64.t().mm(x64), exact_b = g64.sum(0);
      EXPECT_LT(max_rel(g[0], exact_w), 1e-4) << "weight";
      EXPECT_LT(max_rel(g[1], exact_b), 1e-4) << "bias";
      EXPECT_LE(max_rel(g[0], exact_w), max_rel(r_g[0], exact_w) + 1e-6) << "weight: worse than autocast's";
      EXPECT_LE(max_rel(g[1], exact_b), max_rel(r_g[1], exact_b) + 1e-6) << "bias: worse than autocast's";
      if (c.x_grad) {
        ASSERT_EQ(g[2].scalar_type(), x.scalar_type());
        EXPECT_LT(max_rel(g[2], r_g[2]), 1e-2) << "input";
      }

      // bias_grad = false: the weight gradient alone (a GEMM without the epilogue), no bias gradient.
      at::autocast::set_autocast_enabled(at::kCUDA, true);
      auto y_nb = fused_linear(x, weight, bias, /*bias_grad=*/false);
      auto g_nb = torch::autograd::grad({y_nb}, {weight, bias}, {grad_y}, false, false, /*allow_unused=*/true);
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
      EXPECT_TRUE(torch::equal(y_nb, y)) << "forward without the bias gradient";
      EXPECT_LT(max_rel(g_nb[0], exact_w), 1e-4) << "weight without the bias gradient";
      EXPECT_FALSE(g_nb[1].defined()) << "a bias gradient where bias_grad = false";
    }
  }
}

// One kernel for all weight casts (weight_casts.h): the bits of Tensor::to(kBFloat16), ties
// rounded to even included; found by address (a reshaped view too, shaped as asked); refreshed
// after in-place updates; rebuilt for a new set; nothing for tensors it was not given.
TEST(WeightCasts, MatchToBf16AndFollowUpdates) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(7);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  // Exact ties: halfway between two neighbouring bf16 values (a bf16 value plus half its ulp).
  auto a = torch::randn({4099}, f32).to(torch::kBFloat16).to(torch::kFloat32);
  auto [mantissa, exponent] = torch::frexp(a);
  auto ties = a + a.sign() * torch::pow(2.0, (exponent - 9).to(torch::kFloat32));
  std::vector<torch::Tensor> params{torch::randn({768, 3072}, f32), torch::randn({5}, f32) * 1e-3,
                                    torch::randn({33, 7}, f32) * 100, torch::randn({8193}, f32), ties,
                                    torch::zeros({1}, f32)};
  WeightCasts casts;
  auto expect_copies = [&](const char* when) {
    for (size_t i = 0; i < params.size(); ++i) {
      auto copy = casts.find(params[i]);
      ASSERT_TRUE(copy.defined()) << when << ": tensor " << i;
      EXPECT_EQ(copy.sizes(), params[i].sizes()) << when << ": tensor " << i;
      EXPECT_TRUE(torch::equal(copy, params[i].to(torch::kBFloat16))) << when << ": tensor " << i;
    }
  };
  ASSERT_TRUE(casts.refresh(params));
  expect_copies("first refresh");
  auto as_matrix = params[0].view({3072, 768});
  EXPECT_TRUE(torch::equal(casts.find(as_matrix), as_matrix.to(torch::kBFloat16))) << "a reshaped view";
  EXPECT_FALSE(casts.find(params[0].narrow(0, 1, 2)).defined()) << "a view starting elsewhere";
  EXPECT_FALSE(casts.find(torch::randn({5}, f32)).defined()) << "a tensor it was not given";
  {
    torch::NoGradGuard no_grad;
    for (auto& p : params) p.mul_(-3).add_(0.25);
  }
  ASSERT_TRUE(casts.refresh(params));
  expect_copies("after an in-place update");
  params.push_back(torch::randn({100}, f32));
  ASSERT_TRUE(casts.refresh(params));
  expect_copies("a new set");
  WeightCasts other;
  EXPECT_FALSE(other.refresh({torch::randn({4, 4}, f32).t()})) << "a non-contiguous tensor";
  EXPECT_FALSE(other.find(params[0]).defined());
}

// fused_linear takes its bf16 weight from the casts in use (a copy zeroed on purpose shows it),
// and its own cast without them or under a null guard.
TEST(WeightCasts, FusedLinearTakesTheCopies) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(9);
  const auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
  auto weight = torch::randn({16, 32}, f32).requires_grad_(true);
  auto bias = torch::randn({16}, f32).requires_grad_(true);
  auto x = torch::randn({4, 32}, f32).to(torch::kBFloat16);
  WeightCasts casts;
  ASSERT_TRUE(casts.refresh({weight, bias}));
  casts.find(weight).zero_();
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  torch::Tensor with_copies, inner_null, own;
  {
    UseWeightCasts use(&casts);
    with_copies = fused_linear(x, weight, bias);
    {
      UseWeightCasts none(nullptr);
      inner_null = fused_linear(x, weight, bias);
    }
  }
  own = fused_linear(x, weight, bias);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
  EXPECT_TRUE(torch::equal(with_copies, bias.detach().to(torch::kBFloat16).expand({4, 16})))
      << "x times the zeroed copy, plus the bias";
  EXPECT_TRUE(torch::equal(own, at::linear(x, weight.detach().to(torch::kBFloat16), bias.detach().to(torch::kBFloat16))));
  EXPECT_TRUE(torch::equal(inner_null, own)) << "a null guard inside";
}

// The model's forward takes its bf16 weights from the one-kernel casts: after each in-place
// update, and after a move away from the GPU and back, it gives the output of
// the model that casts per Linear (fused_bias_grad = false).
TEST(WeightCasts, ModelForwardSeesUpdatedWeights) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(8);
  auto config = model_config(32, 4, 64, 2, 4, 128, 10);
  VisionTransformer fused(config);
  config.fused_bias_grad = false;
  VisionTransformer plain(config);
  fused->to(torch::kCUDA);
  plain->to(torch::kCUDA);
  copy_weights(fused, plain);
  auto images = torch::randn({4, 3, 32, 32}, torch::kCUDA);
  for (int step = 0; step < 3; ++step) {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    auto y = fused->forward(images).to(torch::kFloat32);
    auto r = plain->forward(images).to(torch::kFloat32);
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
    EXPECT_LT(max_rel(y, r), 1e-3) << "step " << step;
    auto fc1 = fused->named_parameters()["blocks.1.mlp.fc1.weight"];
    auto copy = fused->weight_casts().find(fc1);
    ASSERT_TRUE(copy.defined()) << "the forward did not cast the weights in one kernel";
    EXPECT_TRUE(torch::equal(copy, fc1.to(torch::kBFloat16))) << "step " << step;
    torch::NoGradGuard no_grad;
    for (auto& p : fused->parameters()) p.add_(torch::randn_like(p) * 0.05);
    copy_weights(fused, plain);
    if (step == 1) {  // every parameter reallocated (perhaps at its old address): the casts must follow
      fused->to(torch::kCPU);
      fused->to(torch::kCUDA);
    }
  }
}

}  // namespace
}  // namespace vit::model

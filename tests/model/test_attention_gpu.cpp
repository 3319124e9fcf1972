// The short-sequence attention kernels (model/kernels/fused_attention.h) against softmax attention
// computed in float64 from the same bf16 inputs, forward and backward, and the model with them
// against the model on ATen's kernels. Needs a GPU; skips with a reason without one.
#include <ATen/autocast_mode.h>
#include <algorithm>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/kernels/fused_attention.h"
#include "model/vit.h"

#include "gpu_fixtures.h"

namespace vit::model {
namespace {

using namespace testing;

struct Shape {
  int64_t batch, tokens, heads, head_dim;
};

// softmax(q k^T / sqrt(Dh)) v in float64 from qkv [B, N, 3, H, Dh], as [B, N, H * Dh].
torch::Tensor reference(const torch::Tensor& qkv) {
  auto heads = qkv.permute({2, 0, 3, 1, 4});  // [3, B, H, N, Dh]
  auto q = heads[0], k = heads[1], v = heads[2];
  auto p = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1))), -1);
  auto out = torch::matmul(p, v);  // [B, H, N, Dh]
  return out.transpose(1, 2).reshape({qkv.size(0), qkv.size(1), -1});
}

TEST(FusedAttention, MatchesFloat64SoftmaxAttention) {
  REQUIRE_FUSED_GPU();
  torch::manual_seed(0);
  const auto bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  // The recipe's 65 x 16 (padded to 80) and its fine-tune's 145 x 16, a sequence shorter than one
  // tile, one token, a multiple of 16, heads of 32, and the longest sequences (160).
  for (Shape s : {Shape{6, 65, 12, 16}, Shape{3, 145, 4, 16}, Shape{3, 9, 5, 16}, Shape{2, 1, 3, 16},
                  Shape{4, 48, 3, 16}, Shape{4, 50, 3, 32}, Shape{2, 128, 4, 32}, Shape{2, 160, 3, 16},
                  Shape{2, 157, 3, 32}, Shape{3, 100, 6, 16}}) {
    SCOPED_TRACE("B " + std::to_string(s.batch) + " N " + std::to_string(s.tokens) + " H " +
                 std::to_string(s.heads) + " Dh " + std::to_string(s.head_dim));
    ASSERT_TRUE(fused_attention_supported(s.tokens, s.head_dim));
    // Scores of a few units: softmaxes from flat to peaked.
    auto qkv = (torch::randn({s.batch, s.tokens, 3, s.heads, s.head_dim}, bf16) * 1.5).requires_grad_(true);
    auto grad_out = torch::randn({s.batch, s.tokens, s.heads * s.head_dim}, bf16);
    auto out = fused_attention(qkv);
    out.backward(grad_out);
    ASSERT_EQ(out.sizes(), grad_out.sizes());
    ASSERT_EQ(out.scalar_type(), torch::kBFloat16);

    auto qkv64 = qkv.detach().to(torch::kFloat64).requires_grad_(true);
    auto want = reference(qkv64);
    want.backward(grad_out.to(torch::kFloat64));
    // Rounding the output and gradients to bf16 once: relative 2^-8 of the largest value.
    EXPECT_LT(max_rel(out, want), 8e-3);
    // Each gradient against its own largest value, or 1% of the largest of the three where it is
    // smaller (one token: dq and dk are zero, softmax over one key is constant).
    const double largest = qkv64.grad().abs().max().item<double>();
    for (int64_t part = 0; part < 3; ++part) {
      SCOPED_TRACE(part == 0 ? "dq" : part == 1 ? "dk" : "dv");
      auto got = qkv.grad().select(2, part).to(torch::kFloat64), want = qkv64.grad().select(2, part);
      const double scale = std::max(want.abs().max().item<double>(), 1e-2 * largest);
      EXPECT_LT((got - want).abs().max().item<double>() / scale, 1e-2);
    }
    // And no worse than ATen's own bf16 attention on the same inputs.
    auto heads = qkv.detach().permute({2, 0, 3, 1, 4});
    auto aten = at::scaled_dot_product_attention(heads[0], heads[1], heads[2]).transpose(1, 2).reshape_as(out);
    EXPECT_LE(max_rel(out, want), 1.5 * max_rel(aten, want) + 1e-3);
  }
}

TEST(FusedAttention, NotTakenWhereItDoesNotApply) {
  REQUIRE_FUSED_GPU();
  EXPECT_TRUE(fused_attention_supported(145, 16));  // the fine-tune's 12 x 12 grid and class token
  EXPECT_FALSE(fused_attention_supported(161, 16));  // longer than the kernels are compiled for
  EXPECT_FALSE(fused_attention_supported(161, 32));
  EXPECT_FALSE(fused_attention_supported(65, 64));   // ViT-B's heads
  EXPECT_FALSE(fused_attention_supported(65, 8));
}

// The recipe's shape (12 heads of 16) with train.attention auto (the short kernel) against cudnn's
// and math's attention: same logits and gradients up to bf16 rounding.
TEST(FusedAttention, ModelMatchesAtenAttention) {
  REQUIRE_FUSED_GPU();
  ModelConfig c = model_config(32, 4, 192, 3, 12, 384, 10);
  torch::manual_seed(3);
  VisionTransformer fused(c), plain(c);
  copy_weights(fused, plain);
  fused->to(torch::kCUDA);
  plain->to(torch::kCUDA);
  auto images = torch::randn({32, 3, 32, 32}, torch::kCUDA);
  auto labels = torch::randint(0, 10, {32}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong));
  auto run = [&](VisionTransformer& model, const std::string& backend, bool backward) {
    set_attention_backend(backend);
    return bf16_logits(model, images, backward ? labels : torch::Tensor());
  };
  for (const std::string other : {"math", "cudnn"}) {
    SCOPED_TRACE(other);
    fused->zero_grad();
    plain->zero_grad();
    auto lf = run(fused, "auto", true), lp = run(plain, other, true);
    EXPECT_LT(max_rel(lf, lp), 2e-2);
    auto pf = fused->named_parameters();
    for (auto& p : plain->named_parameters()) EXPECT_LT(max_rel(pf[p.key()].grad(), p.value().grad()), 5e-2) << p.key();
    // Evaluation (no gradients) under autocast takes the short kernel too.
    torch::NoGradGuard no_grad;
    fused->eval();
    plain->eval();
    EXPECT_LT(max_rel(run(fused, "auto", false), run(plain, other, false)), 2e-2);
    fused->train();
    plain->train();
  }
  set_attention_backend("auto");
}

}  // namespace
}  // namespace vit::model

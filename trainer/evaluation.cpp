// The Trainer's evaluation (plain, flip test-time augmentation, the weights' moving average) and
// the moving average itself (train.ema_decay). See trainer.h.
//
// Collective: evaluate() all-reduces its sums on the device communicator; every rank calls it at
// the same steps (Note [Collective order]).
#include <algorithm>

#include "core/json.h"
#include "trainer/autocast.h"
#include "trainer/trainer.h"

namespace vit::train {

void Trainer::update_ema() {
  if (ema_tensors_.empty()) return;
  torch::NoGradGuard no_grad;
  // ema += (1 - decay) (param - ema): one multi-tensor kernel, capturable (the weight is a constant).
  torch::_foreach_lerp_(ema_tensors_, param_tensors_, 1.0 - config_.train.ema_decay);
}

void Trainer::swap_ema() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < param_tensors_.size(); ++i) {
    auto held = param_tensors_[i].clone();
    param_tensors_[i].copy_(ema_tensors_[i]);
    ema_tensors_[i].copy_(held);
  }
}

EvalScores Trainer::eval_pass() {
  torch::NoGradGuard no_grad;
  model_->eval();
  const bool tta = config_.train.eval_flip_tta;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
  auto totals = torch::zeros({4}, f32);  // loss sum, correct, samples (masked), correct with flip TTA
  eval_loader_->seek({0, 0});
  for (int64_t i = 0; i < eval_loader_->steps_per_epoch(); ++i) {
    data::Batch batch = eval_loader_->next();
    torch::Tensor logits, mirrored;
    {
      AutocastGuard autocast(bf16_);
      logits = model_->forward(batch.images).to(torch::kFloat32);
      if (tta) mirrored = model_->forward(batch.images.flip(3)).to(torch::kFloat32);
    }
    auto nll = torch::nn::functional::cross_entropy(
        logits, batch.labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    auto correct = (logits.argmax(-1) == batch.labels).to(torch::kFloat32);
    auto correct_tta = torch::zeros_like(correct);
    if (tta) {  // the mean of the two predicted distributions
      auto probs = torch::softmax(logits, -1) + torch::softmax(mirrored, -1);
      correct_tta = (probs.argmax(-1) == batch.labels).to(torch::kFloat32);
    }
    totals += torch::stack({(nll * batch.mask).sum(), (correct * batch.mask).sum(), batch.mask.sum(),
                            (correct_tta * batch.mask).sum()});
  }
  comm_->allreduce(totals, {dist::ReduceOp::kSum})->wait();
  auto host = totals.to(torch::kCPU);
  const double samples = std::max(1.0, host[2].item<double>());
  EvalScores r;
  r.samples = static_cast<int64_t>(host[2].item<double>());
  r.loss = host[0].item<double>() / samples;
  r.accuracy = host[1].item<double>() / samples;
  if (tta) r.flip_tta_accuracy = host[3].item<double>() / samples;
  model_->train();
  return r;
}

EvalResult Trainer::evaluate() {
  EvalResult r;
  r.model = eval_pass();
  if (!ema_.empty()) {  // the same pass with the moving average in the model's place
    swap_ema();
    r.ema = eval_pass();
    swap_ema();
    r.has_ema = true;
  }
  Json line = Json::object();
  line["split"] = "eval";
  line["step"] = step_;
  line["epochs"] = static_cast<double>(step_) / static_cast<double>(steps_per_epoch_);  // epochs trained
  line["train_seconds"] = train_seconds_;  // training time to this point (evaluation left out)
  auto put = [&](const std::string& prefix, const EvalScores& e) {
    line[prefix + "loss"] = e.loss;
    line[prefix + "accuracy"] = e.accuracy;
    if (e.flip_tta_accuracy >= 0) line[prefix + "flip_tta_accuracy"] = e.flip_tta_accuracy;
  };
  put("", r.model);
  if (r.has_ema) put("ema_", r.ema);
  line["samples"] = r.model.samples;
  metrics_->eval(line);
  return r;
}

}  // namespace vit::train

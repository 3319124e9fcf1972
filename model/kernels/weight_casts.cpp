// The thread's active weight casts (weight_casts.h); the casts themselves are in
// weight_casts_cuda.cpp / weight_casts_cpu.cpp.
#include "model/kernels/weight_casts.h"

namespace vit::model {
namespace {
thread_local const WeightCasts* active = nullptr;
}  // namespace

UseWeightCasts::UseWeightCasts(const WeightCasts* casts) : previous_(active) { active = casts; }
UseWeightCasts::~UseWeightCasts() { active = previous_; }
const WeightCasts* active_weight_casts() { return active; }

}  // namespace vit::model

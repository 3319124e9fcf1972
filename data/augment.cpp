// The augmentation policy, the per-sample draws, and the batched execution (see augment.h).
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/errors.h"
#include "core/strings.h"

namespace vit::data {
namespace F = torch::nn::functional;

namespace {

constexpr double kLevelDenominator = 10.0;  // timm's _LEVEL_DENOM: magnitudes are levels out of 10
constexpr double kPi = 3.14159265358979323846;

// Sub-streams of a sample's key, so that each step's draws are independent of the others'.
enum class Part : uint64_t { kGeometry = 1, kRandAugment = 2, kErase = 3 };
Rng part_rng(uint64_t key, Part part) { return Rng(mix_key({key, static_cast<uint64_t>(part)})); }

// timm's RandAugment op sets, in timm's order (_RAND_TRANSFORMS, _RAND_INCREASING_TRANSFORMS).
enum class RaOp {
  kAutoContrast, kEqualize, kInvert, kRotate, kPosterize, kSolarize, kSolarizeAdd, kColor, kContrast, kBrightness,
  kSharpness, kShearX, kShearY, kTranslateXRel, kTranslateYRel
};
constexpr int kNumRaOps = 15;

// torchvision's TrivialAugmentWide op set, in its order (_augmentation_space), and its 31
// magnitude bins.
enum class TaOp {
  kIdentity, kShearX, kShearY, kTranslateX, kTranslateY, kRotate, kBrightness, kColor, kContrast, kSharpness,
  kPosterize, kSolarize, kAutoContrast, kEqualize
};
constexpr int kNumTaOps = 14;
constexpr int kTaBins = 31;

double radians(double deg) { return deg * kPi / 180.0; }

}  // namespace

RandAugmentSpec parse_rand_augment(const std::string& spec) {
  RandAugmentSpec out;
  if (spec.empty() || spec == "none") return out;
  if (spec == "trivial") {
    out.num_ops = 1;
    out.trivial = true;
    return out;
  }
  auto fail = [&](const std::string& why) {
    VIT_THROW(ConfigError, "data.rand_augment: '", spec, "': ", why,
              "; use timm's form rand-m<magnitude>[-n<ops>][-mstd<std>][-mmax<max>][-p<prob>][-inc<0|1>], e.g. "
              "rand-m9-mstd0.5-inc1, or trivial (TrivialAugment), or none");
  };
  auto parts = split(spec, '-');
  if (parts.empty() || parts[0] != "rand") fail("must start with 'rand'");
  out.num_ops = 2;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    size_t digits = 0;
    while (digits < part.size() && std::isalpha(static_cast<unsigned char>(part[digits]))) ++digits;
    const std::string key = part.substr(0, digits), value = part.substr(digits);
    double v = 0;
    try {
      size_t used = 0;
      v = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      fail(str("'", part, "' has no number after '", key, "'"));
    }
    if (key == "m") {
      out.magnitude = v;
    } else if (key == "n") {
      if (v != std::floor(v) || v < 1 || v > aug::kMaxLayers) fail(str("n must be 1 to ", aug::kMaxLayers));
      out.num_ops = static_cast<int>(v);
    } else if (key == "mstd") {
      out.magnitude_std = v > 100 ? std::numeric_limits<double>::infinity() : v;
    } else if (key == "mmax") {
      out.magnitude_max = v;
    } else if (key == "p") {
      if (v < 0 || v > 1) fail("p must be in [0, 1]");
      out.prob = v;
    } else if (key == "inc") {
      out.increasing = v != 0;
    } else {
      fail(str("unknown part '", part, "'"));
    }
  }
  if (out.magnitude < 0 || out.magnitude_std < 0 || out.magnitude_max <= 0) fail("m, mstd and mmax must be >= 0");
  return out;
}

AugmentPolicy::AugmentPolicy(const DataConfig& config, const LoaderOptions& options)
    : train(options.train),
      crop(config.train_crop),
      padding(config.crop_padding),
      scale(config.rrc_scale),
      ratio(config.rrc_ratio),
      hflip(config.hflip),
      eval_crop_fraction(config.train_crop == "random_resized_crop" ? config.eval_crop_fraction : 1.0),
      out_h(options.image_height),
      out_w(options.image_width),
      bicubic(config.resize_interpolation == "bicubic"),
      rand_augment(parse_rand_augment(config.rand_augment)),
      erase_prob(config.random_erase_prob),
      mixup_alpha(config.mixup_alpha),
      cutmix_alpha(config.cutmix_alpha) {
  for (int c = 0; c < 3; ++c) fill[c] = static_cast<float>(std::min(255.0, std::nearbyint(255.0 * config.mean[c])));
}

GeometryDraw draw_geometry(const AugmentPolicy& policy, uint64_t key, int64_t src_h, int64_t src_w) {
  GeometryDraw d;
  d.box = {0, 0, static_cast<double>(src_h), static_cast<double>(src_w)};
  if (!policy.train) {
    if (policy.eval_crop_fraction < 1.0)
      d.box = center_crop_box(src_h, src_w, policy.out_h, policy.out_w, policy.eval_crop_fraction);
    return d;
  }
  Rng rng = part_rng(key, Part::kGeometry);
  if (policy.crop == "random_resized_crop") {
    d.box = random_resized_crop_box(src_h, src_w, policy.scale, policy.ratio, rng);
  } else if (policy.crop == "pad_crop") {
    d.box = pad_crop_box(src_h, src_w, policy.padding, rng);
  }
  d.flip = policy.hflip && rng.coin();
  return d;
}

aug::LayerPlan affine_layer(double angle_deg, double translate_x, double translate_y, double shear_x_deg,
                            double shear_y_deg, bool about_corner, int64_t h, int64_t w) {
  // torchvision's _get_inverse_affine_matrix, scale 1, in pixel coordinates centred on the image.
  const double rot = radians(angle_deg), sx = radians(shear_x_deg), sy = radians(shear_y_deg);
  const double cx = about_corner ? -0.5 * static_cast<double>(w) : 0.0;
  const double cy = about_corner ? -0.5 * static_cast<double>(h) : 0.0;
  const double a = std::cos(rot - sy) / std::cos(sy);
  const double b = -std::cos(rot - sy) * std::tan(sx) / std::cos(sy) - std::sin(rot);
  const double c = std::sin(rot - sy) / std::cos(sy);
  const double d = -std::sin(rot - sy) * std::tan(sx) / std::cos(sy) + std::cos(rot);
  double m[6] = {d, -b, 0.0, -c, a, 0.0};
  m[2] += m[0] * (-cx - translate_x) + m[1] * (-cy - translate_y) + cx;
  m[5] += m[3] * (-cx - translate_x) + m[4] * (-cy - translate_y) + cy;
  // Output pixel (i, j) sits at (i + 0.5 - w/2, j + 0.5 - h/2) centred; a centred source point
  // (x, y) is at index coordinates (x + w/2 - 0.5, y + h/2 - 0.5).
  const double ox = 0.5 - 0.5 * static_cast<double>(w), oy = 0.5 - 0.5 * static_cast<double>(h);
  aug::LayerPlan p;
  p.op = aug::kAffine;
  p.m[0] = static_cast<float>(m[0]);
  p.m[1] = static_cast<float>(m[1]);
  p.m[2] = static_cast<float>(m[0] * ox + m[1] * oy + m[2] - ox);
  p.m[3] = static_cast<float>(m[3]);
  p.m[4] = static_cast<float>(m[4]);
  p.m[5] = static_cast<float>(m[3] * ox + m[4] * oy + m[5] - oy);
  return p;
}

namespace {

aug::LayerPlan blend_layer(int32_t op, double ratio) {
  aug::LayerPlan p;
  p.op = op;
  p.a = static_cast<float>(ratio);
  p.b = static_cast<float>(1.0 - ratio);
  return p;
}

// One RandAugment op at `level` (0..mmax), as timm's level-to-argument functions and ops define it.
aug::LayerPlan ra_layer(RaOp op, double level, bool increasing, Rng& rng, int64_t h, int64_t w) {
  auto negate = [&](double v) { return rng.uniform() > 0.5 ? -v : v; };  // timm's _randomly_negate
  const double fraction = level / kLevelDenominator;
  aug::LayerPlan p;
  switch (op) {
    case RaOp::kAutoContrast: p.op = aug::kAutoContrast; return p;
    case RaOp::kEqualize: p.op = aug::kEqualize; return p;
    case RaOp::kInvert: p.op = aug::kInvert; return p;
    case RaOp::kRotate:  // PIL's rotate(degrees) = torchvision's rotate(angle): counter-clockwise
      return affine_layer(-negate(fraction * 30.0), 0, 0, 0, 0, false, h, w);
    case RaOp::kPosterize: {
      const int64_t quarter = static_cast<int64_t>(fraction * 4.0);
      const int64_t bits = std::clamp<int64_t>(increasing ? 4 - quarter : quarter, 0, 8);
      if (bits >= 8) return p;
      p.op = aug::kPosterize;
      p.a = static_cast<float>(bits);
      return p;
    }
    case RaOp::kSolarize: {
      const int64_t t = std::min<int64_t>(256, static_cast<int64_t>(fraction * 256.0));
      p.op = aug::kSolarize;
      p.a = static_cast<float>(increasing ? 256 - t : t);
      return p;
    }
    case RaOp::kSolarizeAdd:
      p.op = aug::kSolarizeAdd;
      p.a = static_cast<float>(std::min<int64_t>(128, static_cast<int64_t>(fraction * 110.0)));
      p.b = 128.f;
      return p;
    case RaOp::kColor:
    case RaOp::kContrast:
    case RaOp::kBrightness:
    case RaOp::kSharpness: {
      const double factor =
          increasing ? std::max(0.1, 1.0 + negate(fraction * 0.9)) : fraction * 1.8 + 0.1;
      const int32_t kind = op == RaOp::kColor      ? aug::kColor
                           : op == RaOp::kContrast ? aug::kContrast
                           : op == RaOp::kBrightness ? aug::kBrightness
                                                     : aug::kSharpness;
      return blend_layer(kind, factor);
    }
    case RaOp::kShearX:  // PIL's (1, f, 0, 0, 1, 0) about the top-left corner
      return affine_layer(0, 0, 0, std::atan(negate(fraction * 0.3)) * 180.0 / kPi, 0, true, h, w);
    case RaOp::kShearY:
      return affine_layer(0, 0, 0, 0, std::atan(negate(fraction * 0.3)) * 180.0 / kPi, true, h, w);
    case RaOp::kTranslateXRel:  // PIL's (1, 0, pixels, ...) reads x + pixels: torchvision's translate -pixels
      return affine_layer(0, -negate(fraction * 0.45) * static_cast<double>(w), 0, 0, 0, false, h, w);
    case RaOp::kTranslateYRel:
      return affine_layer(0, 0, -negate(fraction * 0.45) * static_cast<double>(h), 0, 0, false, h, w);
  }
  return p;
}

// One TrivialAugmentWide op at magnitude bin `bin` (0..30), negated for the signed ops, as
// torchvision's _augmentation_space and _apply_op define it. Magnitudes are linspace(0, max, 31)
// in exact arithmetic (torchvision's float32 linspace can land a last bit below: 15.999999 for
// 32 x 15 / 30, which int() turns into a 15-pixel translation where this gives 16).
aug::LayerPlan ta_layer(TaOp op, int bin, bool negative, int64_t h, int64_t w) {
  const double step = static_cast<double>(bin) / (kTaBins - 1), sign = negative ? -1.0 : 1.0;
  aug::LayerPlan p;
  switch (op) {
    case TaOp::kIdentity: return p;
    case TaOp::kShearX:  // F.affine(shear=[degrees(atan(m)), 0], center=[0, 0])
      return affine_layer(0, 0, 0, std::atan(sign * 0.99 * step) * 180.0 / kPi, 0, true, h, w);
    case TaOp::kShearY:
      return affine_layer(0, 0, 0, 0, std::atan(sign * 0.99 * step) * 180.0 / kPi, true, h, w);
    case TaOp::kTranslateX:  // F.affine(translate=[int(m), 0])
      return affine_layer(0, std::trunc(sign * 32.0 * step), 0, 0, 0, false, h, w);
    case TaOp::kTranslateY:
      return affine_layer(0, 0, std::trunc(sign * 32.0 * step), 0, 0, false, h, w);
    case TaOp::kRotate:  // F.rotate(m): counter-clockwise, F.affine's angle -m
      return affine_layer(-sign * 135.0 * step, 0, 0, 0, 0, false, h, w);
    case TaOp::kBrightness: return blend_layer(aug::kBrightness, 1.0 + sign * 0.99 * step);
    case TaOp::kColor: return blend_layer(aug::kColor, 1.0 + sign * 0.99 * step);
    case TaOp::kContrast: return blend_layer(aug::kContrast, 1.0 + sign * 0.99 * step);
    case TaOp::kSharpness: return blend_layer(aug::kSharpness, 1.0 + sign * 0.99 * step);
    case TaOp::kPosterize: {  // 8 - round(bin / 5) bits: 8 (nothing to do) down to 2
      const int bits = 8 - static_cast<int>(std::lround(bin / 5.0));
      if (bits >= 8) return p;
      p.op = aug::kPosterize;
      p.a = static_cast<float>(bits);
      return p;
    }
    case TaOp::kSolarize:  // threshold linspace(255, 0, 31)
      p.op = aug::kSolarize;
      p.a = static_cast<float>(255.0 * (1.0 - step));
      return p;
    case TaOp::kAutoContrast: p.op = aug::kAutoContrast; return p;
    case TaOp::kEqualize: p.op = aug::kEqualize; return p;
  }
  return p;
}

}  // namespace

aug::SamplePlan draw_plan(const AugmentPolicy& policy, uint64_t key) {
  aug::SamplePlan plan;
  if (!policy.train) return plan;
  const RandAugmentSpec& ra = policy.rand_augment;
  if (ra.trivial) {  // one op, one magnitude bin, one sign, each uniform (torchvision's draws)
    Rng rng = part_rng(key, Part::kRandAugment);
    const auto op = static_cast<TaOp>(rng.below(kNumTaOps));
    const int bin = static_cast<int>(rng.below(kTaBins));
    plan.layers[0] = ta_layer(op, bin, rng.coin(), policy.out_h, policy.out_w);
  } else if (ra.num_ops > 0) {
    Rng rng = part_rng(key, Part::kRandAugment);
    for (int l = 0; l < ra.num_ops; ++l) {
      const auto op = static_cast<RaOp>(rng.below(kNumRaOps));  // timm: chosen with replacement
      if (rng.uniform() > ra.prob) continue;                       // timm: skipped when random() > p
      double level = ra.magnitude;
      if (std::isinf(ra.magnitude_std)) {
        level = rng.uniform(0.0, ra.magnitude);
      } else if (ra.magnitude_std > 0) {
        level = ra.magnitude + ra.magnitude_std * rng.normal();
      }
      level = std::clamp(level, 0.0, ra.magnitude_max);
      plan.layers[l] = ra_layer(op, level, ra.increasing, rng, policy.out_h, policy.out_w);
    }
  }
  if (policy.erase_prob > 0) {  // timm's RandomErasing(mode='pixel', max_count=1)
    Rng rng = part_rng(key, Part::kErase);
    if (rng.uniform() <= policy.erase_prob) {
      const double area = static_cast<double>(policy.out_h * policy.out_w);
      const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3);
      for (int attempt = 0; attempt < 10; ++attempt) {
        const double target = rng.uniform(0.02, 1.0 / 3.0) * area;
        const double aspect = std::exp(rng.uniform(log_lo, log_hi));
        const int64_t eh = std::llround(std::nearbyint(std::sqrt(target * aspect)));
        const int64_t ew = std::llround(std::nearbyint(std::sqrt(target / aspect)));
        if (ew < policy.out_w && eh < policy.out_h) {
          plan.erase_top = static_cast<int32_t>(rng.below(policy.out_h - eh + 1));
          plan.erase_left = static_cast<int32_t>(rng.below(policy.out_w - ew + 1));
          plan.erase_height = static_cast<int32_t>(eh);
          plan.erase_width = static_cast<int32_t>(ew);
          const uint64_t noise = rng.next_u64();
          plan.noise_key_lo = static_cast<uint32_t>(noise);
          plan.noise_key_hi = static_cast<uint32_t>(noise >> 32);
          break;
        }
      }
    }
  }
  return plan;
}

torch::Tensor to_device_async(const torch::Tensor& host, torch::Device device) {
  if (!device.is_cuda() || !host.is_cpu()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

namespace {

// Pad-and-crop plus flip as one gather: for each sample, source rows oy + i and columns
// ox + j (or ox + W - 1 - j when flipped) of the zero-padded image.
torch::Tensor pad_crop_flip(const torch::Tensor& images, const std::vector<GeometryDraw>& draws, int64_t pad) {
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  const int64_t hp = h + 2 * pad, wp = w + 2 * pad;
  auto rows_cols = torch::empty({b, h + w}, torch::kInt64);
  int64_t* rc = rows_cols.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t oy = static_cast<int64_t>(draws[i].box.top) + pad, ox = static_cast<int64_t>(draws[i].box.left) + pad;
    for (int64_t y = 0; y < h; ++y) rc[i * (h + w) + y] = oy + y;
    for (int64_t x = 0; x < w; ++x) rc[i * (h + w) + h + x] = ox + (draws[i].flip ? w - 1 - x : x);
  }
  auto dev = to_device_async(rows_cols, images.device());
  auto rows = dev.narrow(1, 0, h), cols = dev.narrow(1, h, w);
  auto flat = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view({b, 1, h * w}).expand({b, 3, h * w});
  auto padded = pad > 0 ? F::pad(images, F::PadFuncOptions({pad, pad, pad, pad})) : images;
  return padded.reshape({b, 3, hp * wp}).gather(2, flat).view({b, 3, h, w});
}

// One box per sample, sampled with an affine grid: crop + flip + resize in one grid_sample.
torch::Tensor sample_boxes(const torch::Tensor& images, const std::vector<GeometryDraw>& draws,
                           const AugmentPolicy& s) {
  const int64_t b = images.size(0);
  const double h = static_cast<double>(images.size(2)), w = static_cast<double>(images.size(3));
  auto theta = torch::zeros({b, 2, 3}, torch::kFloat32);
  float* t = theta.data_ptr<float>();
  for (int64_t i = 0; i < b; ++i) {
    const CropBox& box = draws[i].box;
    t[i * 6 + 0] = static_cast<float>(box.width / w * (draws[i].flip ? -1 : 1));
    t[i * 6 + 2] = static_cast<float>((2 * box.left + box.width) / w - 1);
    t[i * 6 + 4] = static_cast<float>(box.height / h);
    t[i * 6 + 5] = static_cast<float>((2 * box.top + box.height) / h - 1);
  }
  auto grid = F::affine_grid(to_device_async(theta, images.device()), {b, 3, s.out_h, s.out_w}, false);
  auto out = F::grid_sample(images.to(torch::kFloat32), grid,
                            F::GridSampleFuncOptions()
                                .mode(s.bicubic ? F::GridSampleFuncOptions::mode_t(torch::kBicubic)
                                                : F::GridSampleFuncOptions::mode_t(torch::kBilinear))
                                .padding_mode(torch::kBorder)
                                .align_corners(false));
  return s.bicubic ? out.clamp_(0, 255) : out;
}

}  // namespace

Augmenter::Augmenter(const DataConfig& config, const LoaderOptions& options)
    : policy_(config, options), num_classes_(options.num_classes), image_dtype_(options.image_dtype) {
  auto mean = torch::tensor(config.mean, torch::kFloat64), std = torch::tensor(config.std, torch::kFloat64);
  scale_ = (1.0 / (255.0 * std)).to(torch::kFloat32).view({1, 3, 1, 1}).to(options.device);
  shift_ = (-mean / std).to(torch::kFloat32).view({1, 3, 1, 1}).to(options.device);
}

torch::Tensor Augmenter::geometry(const torch::Tensor& images, const std::vector<uint64_t>& keys) const {
  const AugmentPolicy& s = policy_;
  const int64_t b = images.size(0), h = images.size(2), w = images.size(3);
  std::vector<GeometryDraw> draws;
  draws.reserve(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) draws.push_back(draw_geometry(s, s.train ? keys[i] : 0, h, w));
  if (s.train && s.crop == "random_resized_crop") return sample_boxes(images, draws, s);
  if (!s.train && s.eval_crop_fraction < 1.0) return sample_boxes(images, draws, s);
  const bool gather = s.train && (s.crop == "pad_crop" || s.hflip);
  auto out = gather ? pad_crop_flip(images, draws, s.crop == "pad_crop" ? s.padding : 0) : images;
  out = out.to(torch::kFloat32);
  if (h != s.out_h || w != s.out_w) {
    out = F::interpolate(out, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{s.out_h, s.out_w})
                                  .mode(s.bicubic ? F::InterpolateFuncOptions::mode_t(torch::kBicubic)
                                                  : F::InterpolateFuncOptions::mode_t(torch::kBilinear))
                                  .align_corners(false));
    if (s.bicubic) out.clamp_(0, 255);
  }
  return out;
}

Batch Augmenter::finish(torch::Tensor images, torch::Tensor labels, torch::Tensor mask,
                        const std::vector<uint64_t>& keys, uint64_t mix) const {
  const AugmentPolicy& s = policy_;
  const int64_t b = images.size(0);
  const bool rand_augment = s.train && s.rand_augment.num_ops > 0, erase = s.train && s.erase_prob > 0;
  torch::Tensor plans;
  if (rand_augment || erase) {
    plans = torch::empty({b * static_cast<int64_t>(sizeof(aug::SamplePlan))}, torch::kUInt8);
    auto* out = reinterpret_cast<aug::SamplePlan*>(plans.data_ptr<uint8_t>());
    for (int64_t i = 0; i < b; ++i) out[i] = draw_plan(s, keys[i]);
    plans = to_device_async(plans, images.device());
  }
  if (rand_augment) {
    // The ops work on whole numbers 0..255, as on uint8 images (a resize leaves fractions).
    images = images.is_floating_point() ? images.round() : images.to(torch::kFloat32);
    run_layers(images, plans, s.rand_augment.num_ops, s.fill);
  }
  Batch batch;
  // One kernel: shift + x * scale (type promotion turns uint8 into float here).
  batch.images = torch::addcmul(shift_, images.to(torch::kFloat32), scale_);
  if (erase) run_erase(batch.images, plans);
  batch.labels = labels;
  batch.mask = mask;
  if (s.mixes()) this->mix(batch, mix);
  batch.images = batch.images.to(image_dtype_);  // no-op for fp32
  return batch;
}

void Augmenter::mix(Batch& batch, uint64_t key) const {
  const bool mixup = policy_.mixup_alpha > 0, cutmix = policy_.cutmix_alpha > 0;
  Rng rng(key);
  const bool use_cutmix = cutmix && (!mixup || rng.coin());
  const double alpha = use_cutmix ? policy_.cutmix_alpha : policy_.mixup_alpha;
  double lam = rng.beta(alpha, alpha);
  auto partner = batch.images.flip(0);
  if (use_cutmix) {  // a box of area (1 - lam) taken from the partner; lam corrected to the clipped area
    const int64_t h = batch.images.size(2), w = batch.images.size(3);
    const double cut = std::sqrt(1.0 - lam);
    const int64_t ch = static_cast<int64_t>(h * cut), cw = static_cast<int64_t>(w * cut);
    const int64_t cy = rng.below(h), cx = rng.below(w);
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, h), y1 = std::clamp<int64_t>(cy + ch / 2, 0, h);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, w), x1 = std::clamp<int64_t>(cx + cw / 2, 0, w);
    using torch::indexing::Slice;
    batch.images.index_put_({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)},
                            partner.index({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)}));
    lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  } else {
    batch.images = batch.images.mul_(lam).add_(partner, 1.0 - lam);
  }
  auto one_hot = F::one_hot(batch.labels, num_classes_).to(torch::kFloat32);
  batch.targets = one_hot.mul(lam).add_(one_hot.flip(0), 1.0 - lam);
}

}  // namespace vit::data

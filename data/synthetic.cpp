// The synthetic data set (see synthetic.h for what the images look like and why).
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/errors.h"
#include "data/random.h"

namespace vit::data {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct ClassTemplate {
  double cos_t = 1, sin_t = 0, freq = 2;
  double colour[3] = {0, 0, 0};  // grating colour, each in [-1, 1]
  double base[3] = {0, 0, 0};    // mean colour offset, each in [-1, 1]
};

std::vector<ClassTemplate> make_templates(int64_t num_classes, uint64_t seed) {
  std::vector<ClassTemplate> templates(static_cast<size_t>(num_classes));
  for (int64_t k = 0; k < num_classes; ++k) {
    Rng rng(mix_key({seed, tag(Stream::kSynthetic), 0xC1A55, static_cast<uint64_t>(k)}));
    // Orientations spread evenly over [0, pi/2), jittered by a quarter step. Not [0, pi): a
    // horizontal flip maps angle t to pi - t, which would turn one class into another.
    const double theta =
        0.5 * kPi * (static_cast<double>(k) + rng.uniform(-0.25, 0.25)) / static_cast<double>(num_classes);
    ClassTemplate& t = templates[k];
    t.cos_t = std::cos(theta);
    t.sin_t = std::sin(theta);
    t.freq = rng.uniform(1.5, 4.0);
    for (int c = 0; c < 3; ++c) {
      t.colour[c] = rng.uniform(-1, 1);
      t.base[c] = rng.uniform(-1, 1);
    }
    t.colour[k % 3] = k % 2 ? 1.0 : -1.0;  // every grating is strong in at least one channel
  }
  return templates;
}

}  // namespace

TensorSet make_synthetic(const SyntheticOptions& o) {
  VIT_CHECK(o.num_samples >= 1 && o.num_classes >= 2 && o.image_size >= 8, ConfigError,
            "data.synthetic_*: need at least 1 sample, 2 classes and 8 px");
  const auto templates = make_templates(o.num_classes, o.seed);
  const int64_t s = o.image_size;
  TensorSet set{torch::empty({o.num_samples, 3, s, s}, torch::kUInt8), torch::empty({o.num_samples}, torch::kInt64)};
  uint8_t* pixels = set.images.data_ptr<uint8_t>();
  int64_t* labels = set.labels.data_ptr<int64_t>();
  at::parallel_for(0, o.num_samples, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t k = i % o.num_classes;
      labels[i] = k;
      Rng rng(mix_key({o.seed, tag(Stream::kSynthetic), o.train ? 1u : 2u, static_cast<uint64_t>(i)}));
      const ClassTemplate& t = templates[k];
      const ClassTemplate& d = templates[rng.below(o.num_classes)];
      const double phase = rng.uniform(0, 2 * kPi), d_phase = rng.uniform(0, 2 * kPi);
      const double contrast = rng.uniform(0.6, 1.0);
      const double brightness = rng.uniform(-25, 25);
      uint8_t* img = pixels + i * 3 * s * s;
      for (int64_t y = 0; y < s; ++y) {
        for (int64_t x = 0; x < s; ++x) {
          const double u = static_cast<double>(x) / s - 0.5, v = static_cast<double>(y) / s - 0.5;
          const double g = std::sin(2 * kPi * t.freq * (u * t.cos_t + v * t.sin_t) + phase);
          const double gd = std::sin(2 * kPi * d.freq * (u * d.cos_t + v * d.sin_t) + d_phase);
          for (int c = 0; c < 3; ++c) {
            const double value = 128 + brightness + 25 * t.base[c] + 55 * contrast * t.colour[c] * g +
                                 20 * d.colour[c] * gd + 22 * rng.normal();
            img[(c * s + y) * s + x] = static_cast<uint8_t>(std::lround(std::clamp(value, 0.0, 255.0)));
          }
        }
      }
    }
  });
  return set;
}

}  // namespace vit::data

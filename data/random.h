// Counter-based randomness for the data pipeline.
//
// Every random decision in data/ (epoch shuffles, crop boxes, flips, mixup) is a pure function
// of a key built from (seed, epoch, step, rank, ...). Nothing keeps RNG state between batches,
// so resuming at (epoch, step) needs no saved generator and the same seed gives bit-identical
// batches on any thread count. This file does not use torch generators on purpose: their
// streams may change between LibTorch versions; these cannot.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <utility>
#include <vector>

namespace vit::data {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Hashes a sequence of integers into one 64-bit key (order matters).
inline uint64_t mix_key(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x243f6a8885a308d3ULL;
  for (uint64_t p : parts) h = splitmix64(h ^ splitmix64(p));
  return h;
}

// Stream tags, so that different decisions drawn from the same (seed, epoch, step) differ.
enum class Stream : uint64_t { kShuffle = 1, kAugment = 2, kMix = 3, kShards = 4, kSynthetic = 5 };

inline uint64_t tag(Stream s) { return static_cast<uint64_t>(s); }

// A small generator (splitmix64 over a counter) seeded by a key.
class Rng {
 public:
  explicit Rng(uint64_t key) : state_(key) {}
  uint64_t next_u64() { return splitmix64(state_++); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-64 * n, negligible).
  int64_t below(int64_t n) {
    return static_cast<int64_t>((static_cast<unsigned __int128>(next_u64()) * static_cast<uint64_t>(n)) >> 64);
  }
  bool coin() { return (next_u64() >> 63) != 0; }
  double normal() {  // Box-Muller
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Gamma(alpha, 1) by Marsaglia and Tsang; alpha < 1 through the boost u^(1/alpha).
  double gamma(double alpha) {
    if (alpha < 1.0) return gamma(alpha + 1.0) * std::pow(std::max(uniform(), 1e-300), 1.0 / alpha);
    const double d = alpha - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x = normal(), v = 1.0 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      double u = uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(std::max(u, 1e-300)) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }
  double beta(double a, double b) {
    double x = gamma(a), y = gamma(b);
    return x / (x + y);
  }

 private:
  uint64_t state_;
};

// A uniformly random permutation of 0..n-1 (Fisher-Yates) determined by `key`.
inline std::vector<int64_t> permutation(int64_t n, uint64_t key) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  Rng rng(key);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(i + 1)]);
  return p;
}

}  // namespace vit::data

// Training-mode BatchNorm and clamp kernels (batchnorm.h). Channels run in parallel; inside a
// channel each [S] row is summed in 8 float lanes (vectorised, no reassociation of one chain) and
// the rows' sums are added in double, so statistics are float64-accurate to ~1e-7 relative.
#include "batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit {

namespace {

#define LOWBIT_BN_WRAPPERS(name)                                          \
  template <class... Args>                                                \
  LOWBIT_TARGET_AVX512 void name##Avx512(Args... args) { name(args...); } \
  template <class... Args>                                                \
  LOWBIT_TARGET_AVX2 void name##Avx2(Args... args) { name(args...); }

#define LOWBIT_BN_DISPATCH(isa, name, ...)          \
  ((isa) == Isa::Avx512 ? name##Avx512(__VA_ARGS__) \
   : (isa) == Isa::Avx2 ? name##Avx2(__VA_ARGS__) : name(__VA_ARGS__))

constexpr int kLanes = 8;

// Sums of r[0..s) - shift and of its squares, in float lanes, added in double.
LOWBIT_INLINE void rowSums(const float* r, int64_t s, float shift, double* sum, double* sumSq) {
  float acc[kLanes] = {}, accSq[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= s; j += kLanes)
    for (int k = 0; k < kLanes; k++) {
      const float d = r[j + k] - shift;
      acc[k] += d;
      accSq[k] += d * d;
    }
  for (; j < s; j++) {
    const double d = static_cast<double>(r[j] - shift);
    *sum += d;
    *sumSq += d * d;
  }
  for (int k = 0; k < kLanes; k++) {
    *sum += static_cast<double>(acc[k]);
    *sumSq += static_cast<double>(accSq[k]);
  }
}

// Mean (float64, rounded to float) and biased variance (float64) of channel ch, in one pass: the
// sums of x - shift and (x - shift)^2 about the channel's first element (a value of the data, so
// the float lanes add small numbers and E[(x - shift)^2] - E[x - shift]^2 cancels little).
LOWBIT_INLINE void channelStats(const float* x, int64_t n, int64_t c, int64_t s, int64_t ch, float* meanOut, double* varOut) {
  const int64_t count = n * s;
  if (count == 0) {
    *meanOut = 0.0f;
    *varOut = 0.0;
    return;
  }
  const float shift = x[ch * s];
  double sum = 0.0, sq = 0.0;
  for (int64_t i = 0; i < n; i++) rowSums(x + (i * c + ch) * s, s, shift, &sum, &sq);
  const double d = sum / static_cast<double>(count);
  *meanOut = static_cast<float>(static_cast<double>(shift) + d);
  *varOut = std::max(0.0, sq / static_cast<double>(count) - d * d);
}

// Channel ch's statistics: from `stats` ([mean (c), variance (c)], batchNormStats's output) when
// given, else computed from x.
LOWBIT_INLINE void statsOf(const float* x, const float* stats, int64_t n, int64_t c, int64_t s, int64_t ch, float* mean, double* var) {
  if (stats == nullptr) return channelStats(x, n, c, s, ch, mean, var);
  *mean = stats[ch];
  *var = static_cast<double>(stats[c + ch]);
}

// One output value, as one fused multiply-add: the forward and the clamped backward's mask
// recompute it identically.
LOWBIT_INLINE float bnValue(float v, float mean, float scale, float shift) { return std::fma(v - mean, scale, shift); }

// clamp's value and its gradient mask (NaN stays NaN and passes; min > max gives max, no gradient).
LOWBIT_INLINE float clampValue(float v, float lo, float hi) {
  const float low = lo > v ? lo : v;
  return low > hi ? hi : low;
}
LOWBIT_INLINE bool clampPasses(float v, float lo, float hi) {
  const float low = lo > v ? lo : v;
  return !((lo > v) | (low > hi));
}

LOWBIT_INLINE float channelScale(const float* w, double var, float eps, int64_t ch) {
  return static_cast<float>(static_cast<double>(w[ch]) / std::sqrt(var + static_cast<double>(eps)));
}

LOWBIT_INLINE void bnForwardChannels(const float* x, const float* w, const float* b, const float* stats, const BnClamp* clamp,
                                     float* y, int64_t n, int64_t c, int64_t s, float eps, int64_t c0, int64_t c1) {
  for (int64_t ch = c0; ch < c1; ch++) {
    float mean;
    double var;
    statsOf(x, stats, n, c, s, ch, &mean, &var);
    const float scale = channelScale(w, var, eps, ch);
    const float shift = b[ch];
    for (int64_t i = 0; i < n; i++) {
      const float* r = x + (i * c + ch) * s;
      float* o = y + (i * c + ch) * s;
      if (clamp == nullptr) {
        for (int64_t j = 0; j < s; j++) o[j] = bnValue(r[j], mean, scale, shift);
      } else {
        const float lo = clamp->lo, hi = clamp->hi;
        for (int64_t j = 0; j < s; j++) o[j] = clampValue(bnValue(r[j], mean, scale, shift), lo, hi);
      }
    }
  }
}
LOWBIT_BN_WRAPPERS(bnForwardChannels)

LOWBIT_INLINE void bnBackwardChannels(const float* g0, const float* x, const float* w, const float* stats, const BnClamp* clamp,
                                      float* dx, float* dw, float* db, float* masked, int64_t n, int64_t c, int64_t s, float eps,
                                      int64_t c0, int64_t c1) {
  const double count = static_cast<double>(n * s);
  for (int64_t ch = c0; ch < c1; ch++) {
    float mean;
    double var;
    statsOf(x, stats, n, c, s, ch, &mean, &var);
    const double rstdD = 1.0 / std::sqrt(var + static_cast<double>(eps));
    // With a clamp, g goes through clamp's mask on the recomputed output, row by row into `masked`
    // (the channel's rows of a scratch copy) just before the row is summed, and then stands in for g.
    const float* g = clamp != nullptr ? masked : g0;
    const float cScale = clamp != nullptr ? channelScale(w, var, eps, ch) : 0.f;
    // Σg and Σg·(x − mean) in float lanes per row, double across rows.
    double sumG = 0.0, sumGC = 0.0;
    for (int64_t i = 0; i < n; i++) {
      const float* gr = g + (i * c + ch) * s;
      const float* r = x + (i * c + ch) * s;
      if (clamp != nullptr) {
        const float shift = clamp->bias[ch], lo = clamp->lo, hi = clamp->hi;
        const float* g0r = g0 + (i * c + ch) * s;
        float* m = masked + (i * c + ch) * s;
        for (int64_t j = 0; j < s; j++) m[j] = clampPasses(bnValue(r[j], mean, cScale, shift), lo, hi) ? g0r[j] : 0.0f;
      }
      float ag[kLanes] = {}, agc[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= s; j += kLanes)
        for (int k = 0; k < kLanes; k++) {
          ag[k] += gr[j + k];
          agc[k] += gr[j + k] * (r[j + k] - mean);
        }
      for (; j < s; j++) {
        sumG += static_cast<double>(gr[j]);
        sumGC += static_cast<double>(gr[j]) * static_cast<double>(r[j] - mean);
      }
      for (int k = 0; k < kLanes; k++) {
        sumG += static_cast<double>(ag[k]);
        sumGC += static_cast<double>(agc[k]);
      }
    }
    const double sumGX = sumGC * rstdD;  // Σ g·x̂
    dw[ch] = static_cast<float>(sumGX);
    db[ch] = static_cast<float>(sumG);
    // dx = k·(g − Σg/M − x̂·Σg·x̂/M) = k·g − k·Σg/M − (x − mean)·k·rstd·Σg·x̂/M.
    const double k = static_cast<double>(w[ch]) * rstdD;
    const float kf = static_cast<float>(k);
    const float a = static_cast<float>(k * sumG / count);
    const float q = static_cast<float>(k * rstdD * sumGX / count);
    for (int64_t i = 0; i < n; i++) {
      const float* gr = g + (i * c + ch) * s;
      const float* r = x + (i * c + ch) * s;
      float* o = dx + (i * c + ch) * s;
      for (int64_t j = 0; j < s; j++) o[j] = kf * gr[j] - a - (r[j] - mean) * q;
    }
  }
}
LOWBIT_BN_WRAPPERS(bnBackwardChannels)

LOWBIT_INLINE void clampRange(const float* x, float* y, int64_t i0, int64_t i1, float lo, float hi) {
  for (int64_t i = i0; i < i1; i++) {
    const float v = x[i];
    const float low = lo > v ? lo : v;
    y[i] = low > hi ? hi : low;
  }
}
LOWBIT_BN_WRAPPERS(clampRange)

LOWBIT_INLINE void clampBackRange(const float* g, const float* x, float* dx, int64_t i0, int64_t i1, float lo, float hi) {
  for (int64_t i = i0; i < i1; i++) {
    const float v = x[i];
    const float low = lo > v ? lo : v;
    dx[i] = (lo > v) | (low > hi) ? 0.0f : g[i];
  }
}
LOWBIT_BN_WRAPPERS(clampBackRange)

constexpr int64_t kChunk = 8192;

template <class Body>
void chunked(int64_t count, double perElement, Body&& body) {
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  parallelFor(chunks, static_cast<double>(count) * perElement, [&](int64_t k0, int64_t k1) {
    body(k0 * kChunk, k1 * kChunk < count ? k1 * kChunk : count);
  });
}

}  // namespace

void batchNormForward(const float* x, const float* w, const float* b, const float* stats, const BnClamp* clamp, float* y,
                      int64_t n, int64_t c, int64_t s, float eps) {
  const Isa isa = activeIsa();
  parallelFor(c, static_cast<double>(n * c * s) * (stats != nullptr ? 2.0 : 4.0), [&](int64_t c0, int64_t c1) {
    LOWBIT_BN_DISPATCH(isa, bnForwardChannels, x, w, b, stats, clamp, y, n, c, s, eps, c0, c1);
  });
}

void batchNormBackward(const float* g, const float* x, const float* w, const float* stats, const BnClamp* clamp, float* dx,
                       float* dw, float* db, int64_t n, int64_t c, int64_t s, float eps) {
  const Isa isa = activeIsa();
  // The masked gradient goes through dx's own buffer: each channel's rows are read from it before
  // they are overwritten with that channel's dx (channels are disjoint).
  float* masked = clamp != nullptr ? dx : nullptr;
  parallelFor(c, static_cast<double>(n * c * s) * (stats != nullptr ? 4.0 : 6.0), [&](int64_t c0, int64_t c1) {
    LOWBIT_BN_DISPATCH(isa, bnBackwardChannels, g, x, w, stats, clamp, dx, dw, db, masked, n, c, s, eps, c0, c1);
  });
}

void batchNormStats(const float* x, float* out, int64_t n, int64_t c, int64_t s) {
  parallelFor(c, static_cast<double>(n * c * s) * 3.0, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ch++) {
      float mean;
      double var;
      channelStats(x, n, c, s, ch, &mean, &var);
      out[ch] = mean;
      out[c + ch] = static_cast<float>(var);
    }
  });
}

void clampForward(const float* x, float* y, int64_t count, float lo, float hi) {
  const Isa isa = activeIsa();
  chunked(count, 1.0, [&](int64_t i0, int64_t i1) { LOWBIT_BN_DISPATCH(isa, clampRange, x, y, i0, i1, lo, hi); });
}

void clampBackward(const float* g, const float* x, float* dx, int64_t count, float lo, float hi) {
  const Isa isa = activeIsa();
  chunked(count, 1.5, [&](int64_t i0, int64_t i1) { LOWBIT_BN_DISPATCH(isa, clampBackRange, g, x, dx, i0, i1, lo, hi); });
}

}  // namespace lowbit

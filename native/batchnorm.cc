// Training-mode BatchNorm and clamp kernels (batchnorm.h). Channels run in parallel; inside a
// channel each [S] row is summed in 8 float lanes (vectorised, no reassociation of one chain) and
// the rows' sums are added in double, so statistics are float64-accurate to ~1e-7 relative.
#include "batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <immintrin.h>

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

// ---- AVX-512: 16 float lanes, each row's tail through a load mask, and the float lanes flushed
// into double lanes every kFlush vectors (at most 8 values per lane are added in float, so the
// sums stay float64-accurate to ~1e-7 relative, as in the portable loops above). Small rows (the
// 4x4 and 7x7 maps of MobileNet) are where the portable loops lose most: their per-row flush to
// double and their scalar tails cost as much as the row.

constexpr int kFlush = 8;

struct DoubleLanes {
  __m512d lo, hi;
};

LOWBIT_TARGET_AVX512 LOWBIT_INLINE DoubleLanes zeroLanes() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }

LOWBIT_TARGET_AVX512 LOWBIT_INLINE __mmask16 rowMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

LOWBIT_TARGET_AVX512 LOWBIT_INLINE void flushLanes(DoubleLanes& d, __m512& f) {
  d.lo = _mm512_add_pd(d.lo, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
  d.hi = _mm512_add_pd(d.hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)));
  f = _mm512_setzero_ps();
}

LOWBIT_TARGET_AVX512 LOWBIT_INLINE double laneTotal(const DoubleLanes& d) { return _mm512_reduce_add_pd(_mm512_add_pd(d.lo, d.hi)); }

// Σu and Σv·w over channel ch's rows (n rows of s values, c·s apart): chunk(offset, mask, &u, &v,
// &w) gives each 16-lane chunk (zero past the row's end), added in float lanes and flushed into
// double lanes every kFlush chunks. Returns the two totals.
template <class Chunk>
LOWBIT_TARGET_AVX512 LOWBIT_INLINE void channelLaneSums(int64_t n, int64_t c, int64_t s, int64_t ch, Chunk&& chunk, double* sumU, double* sumVW) {
  __m512 accU = _mm512_setzero_ps(), accVW = _mm512_setzero_ps();
  DoubleLanes u = zeroLanes(), vw = zeroLanes();
  int pending = 0;
  for (int64_t i = 0; i < n; i++) {
    const int64_t row = (i * c + ch) * s;
    for (int64_t j = 0; j < s; j += 16) {
      __m512 a, b, d;
      chunk(row + j, rowMask(s - j), &a, &b, &d);
      accU = _mm512_add_ps(accU, a);
      accVW = _mm512_fmadd_ps(b, d, accVW);
      if (++pending == kFlush) {
        flushLanes(u, accU);
        flushLanes(vw, accVW);
        pending = 0;
      }
    }
  }
  flushLanes(u, accU);
  flushLanes(vw, accVW);
  *sumU = laneTotal(u);
  *sumVW = laneTotal(vw);
}

// channelStats with AVX-512 (same shift, same formulas).
LOWBIT_TARGET_AVX512 void channelStatsAvx512(const float* x, int64_t n, int64_t c, int64_t s, int64_t ch, float* meanOut, double* varOut) {
  const int64_t count = n * s;
  if (count == 0) {
    *meanOut = 0.0f;
    *varOut = 0.0;
    return;
  }
  const float shift = x[ch * s];
  const __m512 shiftV = _mm512_set1_ps(shift);
  double sum, sq;  // of x − shift and its square
  channelLaneSums(n, c, s, ch, [&](int64_t off, __mmask16 m, __m512* u, __m512* v, __m512* w) LOWBIT_TARGET_AVX512 {
    *u = *v = *w = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + off), shiftV);
  }, &sum, &sq);
  const double d = sum / static_cast<double>(count);
  *meanOut = static_cast<float>(static_cast<double>(shift) + d);
  *varOut = std::max(0.0, sq / static_cast<double>(count) - d * d);
}

LOWBIT_TARGET_AVX512 LOWBIT_INLINE void statsOfAvx512(const float* x, const float* stats, int64_t n, int64_t c, int64_t s, int64_t ch,
                                                      float* mean, double* var) {
  if (stats == nullptr) return channelStatsAvx512(x, n, c, s, ch, mean, var);
  *mean = stats[ch];
  *var = static_cast<double>(stats[c + ch]);
}

// clampValue of 16 lanes: max(lo, y) keeps a NaN y (MAXPS returns its second operand when either
// is NaN), then min(hi, low) keeps a NaN low and gives hi when lo > hi.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512 clampLanes(__m512 y, __m512 lo, __m512 hi) { return _mm512_min_ps(hi, _mm512_max_ps(lo, y)); }

// clampPasses of 16 lanes, as a mask.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __mmask16 passLanes(__m512 y, __m512 lo, __m512 hi) {
  const __m512 low = _mm512_max_ps(lo, y);
  return static_cast<__mmask16>(~(_mm512_cmp_ps_mask(lo, y, _CMP_GT_OQ) | _mm512_cmp_ps_mask(low, hi, _CMP_GT_OQ)));
}

// The AVX-512 forward and backward go through a thread's channels in blocks of at most
// kBlockChannels channels and about kBlockFloats values per tensor (so a block's x and g stay in
// L2 between passes), and write a block sample by sample: the block's rows of one sample are
// contiguous. Channel by channel, the rows written lie c·s floats apart, and when that is a
// multiple of 4 KiB (the 4x4 maps: 128 channels × 16 floats) each store 4K-aliases the next load
// of x, which then waits for it.
constexpr int64_t kBlockChannels = 64, kBlockFloats = 1 << 15;

LOWBIT_TARGET_AVX512 LOWBIT_INLINE int64_t blockChannels(int64_t n, int64_t s) {
  return std::max<int64_t>(1, std::min<int64_t>(kBlockChannels, kBlockFloats / std::max<int64_t>(1, n * s)));
}

// bnForwardChannels with AVX-512: the same fma per value, so the output is bit for bit the portable one's.
LOWBIT_TARGET_AVX512 void bnForwardChannelsAvx512Lanes(const float* x, const float* w, const float* b, const float* stats,
                                                       const BnClamp* clamp, float* y, int64_t n, int64_t c, int64_t s, float eps,
                                                       int64_t c0, int64_t c1) {
  const __m512 lo = _mm512_set1_ps(clamp != nullptr ? clamp->lo : 0.f), hi = _mm512_set1_ps(clamp != nullptr ? clamp->hi : 0.f);
  float means[kBlockChannels], scales[kBlockChannels];
  const int64_t block = blockChannels(n, s);
  for (int64_t b0 = c0; b0 < c1; b0 += block) {
    const int64_t b1 = std::min(c1, b0 + block);
    for (int64_t ch = b0; ch < b1; ch++) {
      double var;
      statsOfAvx512(x, stats, n, c, s, ch, &means[ch - b0], &var);
      scales[ch - b0] = channelScale(w, var, eps, ch);
    }
    for (int64_t i = 0; i < n; i++)
      for (int64_t ch = b0; ch < b1; ch++) {
        const __m512 meanV = _mm512_set1_ps(means[ch - b0]), scaleV = _mm512_set1_ps(scales[ch - b0]), shiftV = _mm512_set1_ps(b[ch]);
        const float* r = x + (i * c + ch) * s;
        float* o = y + (i * c + ch) * s;
        for (int64_t j = 0; j < s; j += 16) {
          const __mmask16 m = rowMask(s - j);
          __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, r + j), meanV), scaleV, shiftV);
          if (clamp != nullptr) v = clampLanes(v, lo, hi);
          _mm512_mask_storeu_ps(o + j, m, v);
        }
      }
  }
}

// A row chunk's g (zero where the clamp cut the output, or past the row's end) and x − mean.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE void bnGradLanes(const float* g, const float* x, int64_t off, __mmask16 m, bool clamped, __m512 mean,
                                                    __m512 cScale, __m512 cShift, __m512 lo, __m512 hi, __m512* gv, __m512* xc) {
  *xc = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + off), mean);
  if (clamped) m &= passLanes(_mm512_fmadd_ps(*xc, cScale, cShift), lo, hi);
  *gv = _mm512_maskz_loadu_ps(m, g + off);
}

// bnBackwardChannels with AVX-512, in channel blocks: the sums channel by channel, then dx sample
// by sample. With a clamp, the first pass writes the masked g into dx (each value is read back
// from there just before dx overwrites it; channels are disjoint), and the second pass reads it.
LOWBIT_TARGET_AVX512 void bnBackwardChannelsAvx512Lanes(const float* g, const float* x, const float* w, const float* stats,
                                                        const BnClamp* clamp, float* dx, float* dw, float* db, int64_t n, int64_t c,
                                                        int64_t s, float eps, int64_t c0, int64_t c1) {
  const double count = static_cast<double>(n * s);
  const bool clamped = clamp != nullptr;
  const __m512 lo = _mm512_set1_ps(clamped ? clamp->lo : 0.f), hi = _mm512_set1_ps(clamped ? clamp->hi : 0.f);
  // Per channel of the block: mean, and dx = kf·g − a − (x − mean)·q.
  float means[kBlockChannels], kfs[kBlockChannels], as[kBlockChannels], qs[kBlockChannels];
  const int64_t block = blockChannels(n, s);
  for (int64_t b0 = c0; b0 < c1; b0 += block) {
    const int64_t b1 = std::min(c1, b0 + block);
    for (int64_t ch = b0; ch < b1; ch++) {
      const int64_t at = ch - b0;
      double var;
      statsOfAvx512(x, stats, n, c, s, ch, &means[at], &var);
      const double rstdD = 1.0 / std::sqrt(var + static_cast<double>(eps));
      const __m512 meanV = _mm512_set1_ps(means[at]), cScale = _mm512_set1_ps(clamped ? channelScale(w, var, eps, ch) : 0.f);
      const __m512 cShift = _mm512_set1_ps(clamped ? clamp->bias[ch] : 0.f);
      double sumG, sumGC;  // Σg, Σg·(x − mean)
      channelLaneSums(n, c, s, ch, [&](int64_t off, __mmask16 m, __m512* u, __m512* v, __m512* xc) LOWBIT_TARGET_AVX512 {
        bnGradLanes(g, x, off, m, clamped, meanV, cScale, cShift, lo, hi, u, xc);
        if (clamped) _mm512_mask_storeu_ps(dx + off, m, *u);
        *v = *u;
      }, &sumG, &sumGC);
      const double sumGX = sumGC * rstdD;  // Σg·x̂
      dw[ch] = static_cast<float>(sumGX);
      db[ch] = static_cast<float>(sumG);
      const double k = static_cast<double>(w[ch]) * rstdD;
      kfs[at] = static_cast<float>(k);
      as[at] = static_cast<float>(k * sumG / count);
      qs[at] = static_cast<float>(k * rstdD * sumGX / count);
    }
    for (int64_t i = 0; i < n; i++)
      for (int64_t ch = b0; ch < b1; ch++) {
        const int64_t at = ch - b0, row = (i * c + ch) * s;
        const __m512 meanV = _mm512_set1_ps(means[at]);
        const __m512 kf = _mm512_set1_ps(kfs[at]), a = _mm512_set1_ps(as[at]), q = _mm512_set1_ps(qs[at]);
        const float* gs = clamped ? dx : g;  // the masked g, from the first pass
        for (int64_t j = 0; j < s; j += 16) {
          const __mmask16 m = rowMask(s - j);
          const __m512 xc = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + row + j), meanV);
          const __m512 gv = _mm512_maskz_loadu_ps(m, gs + row + j);
          _mm512_mask_storeu_ps(dx + row + j, m, _mm512_fnmadd_ps(xc, q, _mm512_fmsub_ps(kf, gv, a)));
        }
      }
  }
}

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
    if (isa == Isa::Avx512) return bnForwardChannelsAvx512Lanes(x, w, b, stats, clamp, y, n, c, s, eps, c0, c1);
    if (isa == Isa::Avx2) return bnForwardChannelsAvx2(x, w, b, stats, clamp, y, n, c, s, eps, c0, c1);
    bnForwardChannels(x, w, b, stats, clamp, y, n, c, s, eps, c0, c1);
  });
}

void batchNormBackward(const float* g, const float* x, const float* w, const float* stats, const BnClamp* clamp, float* dx,
                       float* dw, float* db, int64_t n, int64_t c, int64_t s, float eps) {
  const Isa isa = activeIsa();
  // The masked gradient goes through dx's own buffer: each channel's rows are read from it before
  // they are overwritten with that channel's dx (channels are disjoint). (AVX-512 runs the
  // intrinsics kernels above; the portable loops serve AVX2 and scalar.)
  float* masked = clamp != nullptr ? dx : nullptr;
  parallelFor(c, static_cast<double>(n * c * s) * (stats != nullptr ? 4.0 : 6.0), [&](int64_t c0, int64_t c1) {
    if (isa == Isa::Avx512) return bnBackwardChannelsAvx512Lanes(g, x, w, stats, clamp, dx, dw, db, n, c, s, eps, c0, c1);
    if (isa == Isa::Avx2) return bnBackwardChannelsAvx2(g, x, w, stats, clamp, dx, dw, db, masked, n, c, s, eps, c0, c1);
    bnBackwardChannels(g, x, w, stats, clamp, dx, dw, db, masked, n, c, s, eps, c0, c1);
  });
}

void batchNormStats(const float* x, float* out, int64_t n, int64_t c, int64_t s) {
  const Isa isa = activeIsa();
  parallelFor(c, static_cast<double>(n * c * s) * 3.0, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ch++) {
      float mean;
      double var;
      if (isa == Isa::Avx512)
        channelStatsAvx512(x, n, c, s, ch, &mean, &var);
      else
        channelStats(x, n, c, s, ch, &mean, &var);
      out[ch] = mean;
      out[c + ch] = static_cast<float>(var);
    }
  });
}

namespace {

LOWBIT_INLINE void statsBackwardChannels(const float* g, const float* x, const float* stats, float* dx, int64_t n, int64_t c, int64_t s,
                                         int64_t c0, int64_t c1) {
  const double count = static_cast<double>(n * s);
  for (int64_t ch = c0; ch < c1; ch++) {
    const float mean = stats[ch];
    const float a = static_cast<float>(2.0 * static_cast<double>(g[c + ch]) / count), b = static_cast<float>(static_cast<double>(g[ch]) / count);
    for (int64_t i = 0; i < n; i++) {
      const float* r = x + (i * c + ch) * s;
      float* o = dx + (i * c + ch) * s;
      for (int64_t j = 0; j < s; j++) o[j] = std::fma(r[j] - mean, a, b);
    }
  }
}
LOWBIT_BN_WRAPPERS(statsBackwardChannels)

}  // namespace

void batchNormStatsBackward(const float* g, const float* x, const float* stats, float* dx, int64_t n, int64_t c, int64_t s) {
  const Isa isa = activeIsa();
  parallelFor(c, static_cast<double>(n * c * s) * 2.0, [&](int64_t c0, int64_t c1) {
    LOWBIT_BN_DISPATCH(isa, statsBackwardChannels, g, x, stats, dx, n, c, s, c0, c1);
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

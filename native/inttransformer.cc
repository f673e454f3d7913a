// The integer Transformer LM's loops (see inttransformer.h; src/quant/irnn/transformer.ts is the
// specification). Every intermediate is an exact integer in int64 (or unsigned __int128 for the
// products of a requantization that do not fit), so the results equal the TypeScript doubles.
#include "inttransformer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "threadpool.h"

namespace lowbit {
namespace {

constexpr int64_t kWide = int64_t{1} << 24;  // the residual stream's and the scores' clamp

inline int64_t clampTo(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// floor((v + 2^(s−1)) / 2^s) for s >= 1 (arithmetic shift = floor).
inline int64_t roundShift(int64_t v, int s) { return (v + (int64_t{1} << (s - 1))) >> s; }

// round(acc·M·2^−shift), half away from zero, exact; saturates to ±(2^63 − 1) (the callers clamp far inside).
// |acc| < 2^62, shift in [-32, 100] (intTfShiftProblem).
inline int64_t rq(int64_t acc, int32_t m, int32_t shift) {
  if (acc == 0 || m == 0) return 0;
  const bool negative = (acc < 0) != (m < 0);
  const uint64_t a = acc < 0 ? uint64_t{0} - static_cast<uint64_t>(acc) : static_cast<uint64_t>(acc);
  const uint64_t mm = m < 0 ? uint64_t{0} - static_cast<uint64_t>(static_cast<int64_t>(m)) : static_cast<uint64_t>(m);
  uint64_t r;
  if (a < (uint64_t{1} << 32) && shift >= 1 && shift <= 63) {
    const uint64_t prod = a * mm;  // < 2^63
    r = (prod + (uint64_t{1} << (shift - 1))) >> shift;
  } else if (a < (uint64_t{1} << 48) && shift >= 16 && shift <= 63) {
    // a·M = ah·M·2^16 + al·M with ah·M < 2^63 and al·M + 2^(s−1) < 2^63; then
    // ⌊(X·2^16 + Y) / 2^s⌋ = ⌊(X + ⌊Y / 2^16⌋) / 2^(s−16)⌋ (nested floors), all in 64 bits.
    const uint64_t X = (a >> 16) * mm;
    const uint64_t Y = (a & 0xffff) * mm + (uint64_t{1} << (shift - 1));
    r = (X + (Y >> 16)) >> (shift - 16);
    if (r > static_cast<uint64_t>(INT64_MAX)) r = static_cast<uint64_t>(INT64_MAX);
  } else {
    const unsigned __int128 prod = static_cast<unsigned __int128>(a) * mm;  // < 2^94
    const unsigned __int128 q = shift > 0 ? (prod + (static_cast<unsigned __int128>(1) << (shift - 1))) >> shift : prod << (-shift);
    r = q > static_cast<unsigned __int128>(INT64_MAX) ? static_cast<uint64_t>(INT64_MAX) : static_cast<uint64_t>(q);
  }
  return negative ? -static_cast<int64_t>(r) : static_cast<int64_t>(r);
}

// I-BERT's i-exp (quant/irnn/attention.ts intExp): exp(d·2^−12) at 2^−15 for d <= 0.
constexpr int64_t kLn2 = 2839;        // round(ln 2·2^12)
constexpr int64_t kPolyB = 5542;      // round(1.353·2^12)
constexpr int64_t kPolyA = 11747;     // round(0.3585·2^15)
constexpr int64_t kPolyC = 11272;     // round(0.344·2^15)
constexpr int kPolyShift = 24;        // 2·12 + 15 − 15
constexpr int kReciprocalBits = 46;
constexpr int kProb16Frac = 16;

inline int64_t intExp(int64_t d) {
  const int64_t z = (-d) / kLn2;
  if (z > 30) return 0;
  const int64_t t = d + z * kLn2 + kPolyB;
  const int64_t poly = roundShift(kPolyA * t * t, kPolyShift) + kPolyC;
  return z == 0 ? poly : roundShift(poly, static_cast<int>(z));
}

int bitLength(uint64_t m) { return m == 0 ? 0 : 64 - __builtin_clzll(m); }

// ⌊√n⌋ for 0 <= n < 2^52, then rounded to nearest (quant/irnn/layernorm.ts isqrtRound).
int64_t isqrtRound(int64_t n) {
  if (n < 2) return n;
  int64_t r = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
  while (r * r > n) r--;
  while ((r + 1) * (r + 1) <= n) r++;
  return n - r * r > r ? r + 1 : r;
}

// round(a / b), half away from zero, b > 0.
inline int64_t roundDiv(int64_t a, int64_t b) {
  const int64_t m = a < 0 ? -a : a;
  const int64_t q = m / b;
  const int64_t r = 2 * (m - q * b) >= b ? q + 1 : q;
  return a < 0 ? -r : r;
}

constexpr int kSqrtFrac = 20;
constexpr int kNormFrac = 12;
constexpr int kBetaFrac = 8;
constexpr int64_t kEpsCap = int64_t{1} << 51;

void layerNormRow(const IntTfLayerNorm& p, const int32_t* x, int8_t* out, int64_t* e) {
  const int64_t D = p.size;
  int64_t S = 0;
  for (int64_t i = 0; i < D; i++) S += x[i];
  uint64_t m = 0;
  for (int64_t i = 0; i < D; i++) {
    const int64_t c = D * x[i] - S;
    const uint64_t a = static_cast<uint64_t>(c < 0 ? -c : c);
    if (a > m) m = a;
  }
  if (m == 0) {
    for (int64_t i = 0; i < D; i++) out[i] = static_cast<int8_t>(clampTo(roundShift(p.beta[i], kBetaFrac), p.outMin, p.outMax));
    return;
  }
  const int k = bitLength(m) - 15;
  int64_t Q = 0;
  for (int64_t i = 0; i < D; i++) {
    const int64_t c = D * x[i] - S;
    const int64_t v = k > 0 ? roundShift(c, k) : c * (int64_t{1} << -k);
    e[i] = v;
    Q += v * v;
  }
  if (p.epsCode > 0) {
    const unsigned __int128 eps = static_cast<unsigned __int128>(p.epsCode) * static_cast<uint64_t>(D) * static_cast<uint64_t>(D) * static_cast<uint64_t>(D);
    unsigned __int128 E;
    if (k <= 0) {
      // eps < 2^84 and −2k <= 28: the shifted value fits the 128 bits.
      E = eps << (-2 * k);
    } else {
      E = (eps + (static_cast<unsigned __int128>(1) << (2 * k - 1))) >> (2 * k);
    }
    Q += E > static_cast<unsigned __int128>(kEpsCap) ? kEpsCap : static_cast<int64_t>(E);
  }
  const int64_t r = isqrtRound(Q) << (kSqrtFrac - kNormFrac);
  for (int64_t i = 0; i < D; i++) {
    const int64_t n = roundDiv(e[i] * p.sqrtSize, r);
    const int64_t y = roundShift(rq(static_cast<int64_t>(p.gamma[i]) * n, p.multiplier, p.shift) + p.beta[i], kBetaFrac);
    out[i] = static_cast<int8_t>(clampTo(y, p.outMin, p.outMax));
  }
}

}  // namespace

const char* intTfShiftProblem(int32_t shift) {
  return shift < -32 || shift > 100 ? "a requantization shift is outside [-32, 100]" : nullptr;
}

void intTfEmbed(int64_t rows, int64_t steps, int64_t past, int64_t E, const int32_t* ids, const int8_t* table,
                const int32_t* mult, const int32_t* shift, const int32_t* positions, int32_t* x) {
  parallelFor(rows, static_cast<double>(rows * E) * 4, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; row++) {
      const int64_t id = ids[row];
      const int8_t* t = table + id * E;
      const int32_t* pos = positions + (past + row % steps) * E;
      int32_t* o = x + row * E;
      for (int64_t e = 0; e < E; e++) o[e] = static_cast<int32_t>(clampTo(rq(t[e], mult[id], shift[id]) + pos[e], -kWide, kWide));
    }
  });
}

void intTfLayerNormRows(const IntTfLayerNorm& p, int64_t rows, const int32_t* x, int8_t* out) {
  const int64_t D = p.size;
  parallelFor(rows, static_cast<double>(rows * D) * 12, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> e(static_cast<size_t>(D));
    for (int64_t r = begin; r < end; r++) layerNormRow(p, x + r * D, out + r * D, e.data());
  });
}

void intTfRequantize(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult,
                     const int32_t* shift, int32_t lo, int32_t hi, int mode, int32_t* out32, int8_t* out8) {
  parallelFor(M, static_cast<double>(M * R) * 4, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; m++) {
      const int32_t* a = acc + m * R;
      for (int64_t r = 0; r < R; r++) {
        const int64_t v = clampTo(rq(static_cast<int64_t>(a[r]) + bias[r], mult[r], shift[r]), lo, hi);
        const int64_t i = m * R + r;
        if (mode == 0) out32[i] = static_cast<int32_t>(v);
        else if (mode == 1) out32[i] = static_cast<int32_t>(clampTo(out32[i] + v, -kWide, kWide));
        else out8[i] = static_cast<int8_t>(v);
      }
    }
  });
}

void intTfGelu(int64_t count, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
               int32_t erfClip, int32_t erfA, int8_t* out) {
  parallelFor(count, static_cast<double>(count) * 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const int64_t v = t[i];
      const int64_t c = std::min<int64_t>(v < 0 ? -v : v, erfClip) - erfClip;
      const int64_t erf = roundShift(static_cast<int64_t>(erfA) * c * c, 24) + 32768;
      const int64_t g = v * (32768 + (v < 0 ? -erf : erf));
      out[i] = static_cast<int8_t>(clampTo(rq(g, multiplier, shift), lo, hi));
    }
  });
}

void intTfAttention(const IntTfAttention& p, const int32_t* qkv, int8_t* keys, int8_t* values, int8_t* context) {
  const int64_t H = p.heads, d = p.headDim, E = H * d, W = 3 * E, steps = p.steps, cap = p.capacity;
  const int64_t total = p.past + steps;
  const double work = static_cast<double>(p.batch * H) * static_cast<double>(steps) * static_cast<double>(total) * static_cast<double>(2 * d + 8);
  parallelForEach(p.batch * H, work, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> scores(static_cast<size_t>(total)), probs(static_cast<size_t>(total)), q(static_cast<size_t>(d)), acc(static_cast<size_t>(d));
    std::vector<int64_t> exps(static_cast<size_t>(total));
    for (int64_t task = begin; task < end; task++) {
      const int64_t n = task / H, hd = task % H;
      int8_t* K = keys + task * cap * d;
      int8_t* Vv = values + task * cap * d;
      for (int64_t t = 0; t < steps; t++) {
        const int32_t* src = qkv + (n * steps + t) * W + hd * d;
        int8_t* k = K + (p.past + t) * d;
        int8_t* v = Vv + (p.past + t) * d;
        for (int64_t c = 0; c < d; c++) {
          k[c] = static_cast<int8_t>(src[E + c]);
          v[c] = static_cast<int8_t>(src[2 * E + c]);
        }
      }
      for (int64_t t = 0; t < steps; t++) {
        const int32_t* src = qkv + (n * steps + t) * W + hd * d;
        for (int64_t c = 0; c < d; c++) q[c] = src[c];
        const int64_t L = p.past + t + 1;
        int32_t top = INT32_MIN;
        for (int64_t j = 0; j < L; j++) {
          const int8_t* k = K + j * d;
          int32_t dot = 0;
          for (int64_t c = 0; c < d; c++) dot += q[c] * k[c];
          const int32_t s = static_cast<int32_t>(clampTo(rq(dot, p.scoreMult, p.scoreShift), -kWide, kWide));
          scores[j] = s;
          if (s > top) top = s;
        }
        int64_t sum = 0;
        for (int64_t j = 0; j < L; j++) {
          exps[j] = intExp(static_cast<int64_t>(scores[j]) - top);
          sum += exps[j];
        }
        const int64_t reciprocal = (int64_t{1} << kReciprocalBits) / sum;
        for (int64_t j = 0; j < L; j++) {
          const int64_t p16 = roundShift(exps[j] * reciprocal, kReciprocalBits - kProb16Frac);
          const int64_t code = rq(p16, p.probsMult, p.probsShift);
          probs[j] = static_cast<int32_t>(code > p.probsMax ? p.probsMax : code);
        }
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t j = 0; j < L; j++) {
          const int32_t pj = probs[j];
          if (pj == 0) continue;
          const int8_t* v = Vv + j * d;
          for (int64_t c = 0; c < d; c++) acc[c] += pj * v[c];
        }
        int8_t* out = context + (n * steps + t) * E + hd * d;
        for (int64_t c = 0; c < d; c++) out[c] = static_cast<int8_t>(clampTo(rq(acc[c], p.contextMult, p.contextShift), p.contextMin, p.contextMax));
      }
    }
  });
}

}  // namespace lowbit

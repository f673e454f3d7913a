// The integer Transformer LM's loops (see inttransformer.h; src/quant/irnn/transformer.ts is the
// specification). Every intermediate is an exact integer in int64 (or unsigned __int128 for the
// products of a requantization that do not fit), so the results equal the TypeScript doubles.
// Two forms: the scalar loops (every ISA; also the loops of before, for benchmarks) and AVX-512 loops
// on 8 int64 lanes that check their operand bounds and hand what falls outside to the scalar ones.
#include "inttransformer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
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

// The integer LayerNorm's root r = round(√(Q + ε term)) · 2^(kSqrtFrac − kNormFrac) of one row, from
// Q = Σ e², the row's centred values e scaled by 2^−k; the ε term is epsCode·D³ scaled by 2^−2k
// (rounded; eps < 2^84 and −2k <= 28, so the left shift fits 128 bits), capped at kEpsCap.
// Shared by the scalar, AVX2 and AVX-512 rows, which must agree bit for bit.
inline int64_t layerNormRoot(const IntTfLayerNorm& p, int64_t D, int k, int64_t Q) {
  if (p.epsCode > 0) {
    const unsigned __int128 eps = static_cast<unsigned __int128>(p.epsCode) * static_cast<uint64_t>(D) * static_cast<uint64_t>(D) * static_cast<uint64_t>(D);
    const unsigned __int128 E = k <= 0 ? eps << (-2 * k) : (eps + (static_cast<unsigned __int128>(1) << (2 * k - 1))) >> (2 * k);
    Q += E > static_cast<unsigned __int128>(kEpsCap) ? kEpsCap : static_cast<int64_t>(E);
  }
  return isqrtRound(Q) << (kSqrtFrac - kNormFrac);
}

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
  const int64_t r = layerNormRoot(p, D, k, Q);
  for (int64_t i = 0; i < D; i++) {
    const int64_t n = roundDiv(e[i] * p.sqrtSize, r);
    const int64_t y = roundShift(rq(static_cast<int64_t>(p.gamma[i]) * n, p.multiplier, p.shift) + p.beta[i], kBetaFrac);
    out[i] = static_cast<int8_t>(clampTo(y, p.outMin, p.outMax));
  }
}

// ---------------------------------------------------------------- scalar loops (every ISA)

void embedScalar(int64_t rows, int64_t steps, int64_t past, int64_t E, const int32_t* ids, const int8_t* table,
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

void layerNormScalar(const IntTfLayerNorm& p, int64_t rows, const int32_t* x, int8_t* out) {
  const int64_t D = p.size;
  parallelFor(rows, static_cast<double>(rows * D) * 12, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> e(static_cast<size_t>(D));
    for (int64_t r = begin; r < end; r++) layerNormRow(p, x + r * D, out + r * D, e.data());
  });
}

void requantizeScalar(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult,
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

void geluScalar(int64_t count, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
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

// Appends one attention task's (sequence n, head hd) new keys and values, steps [past, past + steps), to its
// cache rows K / V ([capacity, headDim] each) from the fused QKV codes. QKV: int32_t or int8_t.
template <class QKV>
inline void appendKeysValues(const IntTfAttention& p, const QKV* qkv, int64_t task, int8_t* K, int8_t* V) {
  const int64_t H = p.heads, d = p.headDim, E = H * d, W = 3 * E, steps = p.steps;
  const int64_t n = task / H, hd = task % H;
  for (int64_t t = 0; t < steps; t++) {
    const QKV* src = qkv + (n * steps + t) * W + hd * d;
    int8_t* k = K + (p.past + t) * d;
    int8_t* v = V + (p.past + t) * d;
    for (int64_t c = 0; c < d; c++) {
      k[c] = static_cast<int8_t>(src[E + c]);
      v[c] = static_cast<int8_t>(src[2 * E + c]);
    }
  }
}

// QKV: int32_t (codes in int32) or int8_t.
template <class QKV>
void attentionScalar(const IntTfAttention& p, const QKV* qkv, int8_t* keys, int8_t* values, int8_t* context) {
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
      appendKeysValues(p, qkv, task, K, Vv);
      for (int64_t t = 0; t < steps; t++) {
        const QKV* src = qkv + (n * steps + t) * W + hd * d;
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

// ---------------------------------------------------------------- AVX-512 loops
// The same integers with 8 int64 lanes per vector. Each loop runs only where its bounds hold (checked per
// call or per row; the scalar loop runs otherwise): every requantization input |a| < 2^48 and its shift in
// [16, 63], which makes rqVec exact (below).

#define TF_AVX512_INLINE LOWBIT_TARGET_AVX512 inline __attribute__((always_inline))

constexpr int kVecShiftMin = 16, kVecShiftMax = 63;
constexpr int64_t kVecInputLimit = int64_t{1} << 48;

inline bool vecShift(int32_t s) { return s >= kVecShiftMin && s <= kVecShiftMax; }

bool vecShifts(const int32_t* s, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (!vecShift(s[i])) return false;
  }
  return true;
}

// The lanes [0, n) of 8 (n >= 8: all).
inline __mmask8 laneMask(int64_t n) { return n >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << n) - 1); }
inline __mmask16 laneMask16(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1); }

// rq on 8 lanes: round(a·m·2^−s) half away from zero for |a| < 2^48, m an int32 (sign-extended), s in [16, 63];
// results above 2^62 in magnitude saturate to ±2^62 (every caller clamps far inside, as the scalar
// rq's saturation at 2^63 − 1). With |a| = ah·2^16 + al: a·|m| + 2^(s−1) = X·2^16 + Y for X = ah·|m| < 2^63,
// Y = al·|m| + 2^(s−1) < 2^63, and ⌊(X·2^16 + Y) / 2^s⌋ = ⌊(X + ⌊Y / 2^16⌋) / 2^(s−16)⌋ (nested floors):
// two 32 × 32 → 64-bit products, as the scalar rq's middle case.
// When every |a| < 2^32 (the common case: int32 accumulators, scores, probabilities), one product a·|m| < 2^63 does.
TF_AVX512_INLINE __m512i rqVec(__m512i a, __m512i m, __m512i s) {
  const __mmask8 negative = _mm512_movepi64_mask(_mm512_xor_si512(a, m));
  const __m512i ua = _mm512_abs_epi64(a), um = _mm512_abs_epi64(m);
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i half = _mm512_sllv_epi64(one, _mm512_sub_epi64(s, one));
  if (_mm512_cmpge_epu64_mask(ua, _mm512_set1_epi64(int64_t{1} << 32)) == 0) {
    // a·|m| + 2^(s−1) < 2^63 + 2^62: no wrap; the quotient is below 2^48.
    const __m512i r = _mm512_srlv_epi64(_mm512_add_epi64(_mm512_mul_epu32(ua, um), half), s);
    return _mm512_mask_sub_epi64(r, negative, _mm512_setzero_si512(), r);
  }
  const __m512i high = _mm512_mul_epu32(_mm512_srli_epi64(ua, 16), um);
  const __m512i low = _mm512_add_epi64(_mm512_mul_epu32(_mm512_and_si512(ua, _mm512_set1_epi64(0xffff)), um), half);
  __m512i r = _mm512_srlv_epi64(_mm512_add_epi64(high, _mm512_srli_epi64(low, 16)), _mm512_sub_epi64(s, _mm512_set1_epi64(16)));
  r = _mm512_min_epu64(r, _mm512_set1_epi64(int64_t{1} << 62));
  return _mm512_mask_sub_epi64(r, negative, _mm512_setzero_si512(), r);
}

TF_AVX512_INLINE __m512i clampVec(__m512i v, __m512i lo, __m512i hi) { return _mm512_min_epi64(_mm512_max_epi64(v, lo), hi); }

// 8 int32 (lanes past `mask` read as 0) as int64 lanes.
TF_AVX512_INLINE __m512i load32(__mmask8 mask, const int32_t* p) { return _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(mask, p)); }
TF_AVX512_INLINE __m512i load8(__mmask8 mask, const int8_t* p) { return _mm512_cvtepi8_epi64(_mm_maskz_loadu_epi8(mask, p)); }

LOWBIT_TARGET_AVX512 void embedRowAvx512(int64_t E, const int8_t* t, int32_t mult, int32_t shift, const int32_t* pos, int32_t* o) {
  const __m512i m = _mm512_set1_epi64(mult), s = _mm512_set1_epi64(shift);
  const __m512i lo = _mm512_set1_epi64(-kWide), hi = _mm512_set1_epi64(kWide);
  for (int64_t e = 0; e < E; e += 8) {
    const __mmask8 k = laneMask(E - e);
    const __m512i v = clampVec(_mm512_add_epi64(rqVec(load8(k, t + e), m, s), load32(k, pos + e)), lo, hi);
    _mm512_mask_cvtepi64_storeu_epi32(o + e, k, v);
  }
}

// One LayerNorm row (layerNormRow's integers); false when the row needs the scalar loop (a constant row).
// Needs p.shift in [16, 63] and sqrtSize < 2^31 (the caller checks). Bounds: |x| <= 2^24, D <= 2^18 so
// |D·x − S| < 2^43; |v| <= 2^15; |v·sqrtSize| < 2^46 (exact in a double); |n| <= √D·2^13 (Q >= max v² >= 2^28)
// so |γ·n| < 2^37.
LOWBIT_TARGET_AVX512 bool layerNormRowAvx512(const IntTfLayerNorm& p, const int32_t* x, int8_t* out, int64_t* e) {
  const int64_t D = p.size;
  __m512i sum = _mm512_setzero_si512();
  for (int64_t i = 0; i < D; i += 8) sum = _mm512_add_epi64(sum, load32(laneMask(D - i), x + i));
  const int64_t S = _mm512_reduce_add_epi64(sum);
  const __m512i Dv = _mm512_set1_epi64(D), Sv = _mm512_set1_epi64(S);
  __m512i top = _mm512_setzero_si512();
  for (int64_t i = 0; i < D; i += 8) {
    const __mmask8 k = laneMask(D - i);
    const __m512i c = _mm512_sub_epi64(_mm512_mul_epi32(load32(k, x + i), Dv), Sv);
    top = _mm512_mask_max_epu64(top, k, top, _mm512_abs_epi64(c));
  }
  // (GCC 12's _mm512_reduce_max_epu64 warns of an uninitialized operand: reduce through memory.)
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, top);
  const uint64_t m = *std::max_element(lanes, lanes + 8);
  if (m == 0) return false;
  const int k = bitLength(m) - 15;
  const __m128i kCount = _mm_cvtsi64_si128(k > 0 ? k : 0), upCount = _mm_cvtsi64_si128(k > 0 ? 0 : -k);
  const __m512i kHalf = _mm512_set1_epi64(k > 0 ? int64_t{1} << (k - 1) : 0);
  __m512i squares = _mm512_setzero_si512();
  for (int64_t i = 0; i < D; i += 8) {
    const __mmask8 lanes = laneMask(D - i);
    const __m512i c = _mm512_sub_epi64(_mm512_mul_epi32(load32(lanes, x + i), Dv), Sv);
    const __m512i v = k > 0 ? _mm512_sra_epi64(_mm512_add_epi64(c, kHalf), kCount) : _mm512_sll_epi64(c, upCount);
    _mm512_mask_storeu_epi64(e + i, lanes, v);
    squares = _mm512_mask_add_epi64(squares, lanes, squares, _mm512_mul_epi32(v, v));
  }
  int64_t Q = _mm512_reduce_add_epi64(squares);
  const int64_t r = layerNormRoot(p, D, k, Q);
  // n = round(v·sqrtSize / r), half away from zero, in doubles that hold every value exactly: |v·sqrtSize| < 2^46,
  // r < 2^39; the quotient from a product by 1/r is within 1 of ⌊a / r⌋, the remainder a − q·r of one fused
  // multiply-add is exact (|a − q·r| < 2r), and one correction each way makes it ⌊a / r⌋ and a mod r.
  const __m512d rd = _mm512_set1_pd(static_cast<double>(r)), sqrtSize = _mm512_set1_pd(static_cast<double>(p.sqrtSize));
  const __m512d inverse = _mm512_set1_pd(1.0 / static_cast<double>(r)), oned = _mm512_set1_pd(1.0), zerod = _mm512_setzero_pd();
  const __m512i M = _mm512_set1_epi64(p.multiplier), shift = _mm512_set1_epi64(p.shift);
  const __m512i lo = _mm512_set1_epi64(p.outMin), hi = _mm512_set1_epi64(p.outMax);
  const __m512i betaHalf = _mm512_set1_epi64(int64_t{1} << (kBetaFrac - 1));
  for (int64_t i = 0; i < D; i += 8) {
    const __mmask8 lanes = laneMask(D - i);
    const __m512d num = _mm512_mul_pd(_mm512_cvtepi64_pd(_mm512_maskz_loadu_epi64(lanes, e + i)), sqrtSize);
    const __m512d a = _mm512_abs_pd(num);
    __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(a, inverse), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d rem = _mm512_fnmadd_pd(q, rd, a);
    const __mmask8 under = _mm512_cmp_pd_mask(rem, zerod, _CMP_LT_OQ);
    q = _mm512_mask_sub_pd(q, under, q, oned);
    rem = _mm512_mask_add_pd(rem, under, rem, rd);
    const __mmask8 over = _mm512_cmp_pd_mask(rem, rd, _CMP_GE_OQ);
    q = _mm512_mask_add_pd(q, over, q, oned);
    rem = _mm512_mask_sub_pd(rem, over, rem, rd);
    q = _mm512_mask_add_pd(q, _mm512_cmp_pd_mask(_mm512_add_pd(rem, rem), rd, _CMP_GE_OQ), q, oned);
    const __mmask8 negative = _mm512_cmp_pd_mask(num, zerod, _CMP_LT_OQ);
    const __m512i magnitude = _mm512_cvttpd_epi64(q);
    const __m512i n = _mm512_mask_sub_epi64(magnitude, negative, _mm512_setzero_si512(), magnitude);
    const __m512i g = _mm512_mul_epi32(load32(lanes, p.gamma + i), n);
    const __m512i y = _mm512_srai_epi64(_mm512_add_epi64(_mm512_add_epi64(rqVec(g, M, shift), load32(lanes, p.beta + i)), betaHalf), kBetaFrac);
    _mm512_mask_cvtepi64_storeu_epi8(out + i, lanes, clampVec(y, lo, hi));
  }
  return true;
}

LOWBIT_TARGET_AVX512 void requantizeRowAvx512(int64_t R, const int32_t* a, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                                               int32_t lo, int32_t hi, int mode, int32_t* out32, int8_t* out8) {
  const __m512i lov = _mm512_set1_epi64(lo), hiv = _mm512_set1_epi64(hi);
  const __m512i wideLo = _mm512_set1_epi64(-kWide), wideHi = _mm512_set1_epi64(kWide);
  for (int64_t r = 0; r < R; r += 8) {
    const __mmask8 k = laneMask(R - r);
    const __m512i sum = _mm512_add_epi64(load32(k, a + r), load32(k, bias + r));  // |sum| <= 2^32
    const __m512i v = clampVec(rqVec(sum, load32(k, mult + r), load32(k, shift + r)), lov, hiv);
    if (mode == 0) {
      _mm512_mask_cvtepi64_storeu_epi32(out32 + r, k, v);
    } else if (mode == 1) {
      _mm512_mask_cvtepi64_storeu_epi32(out32 + r, k, clampVec(_mm512_add_epi64(load32(k, out32 + r), v), wideLo, wideHi));
    } else {
      _mm512_mask_cvtepi64_storeu_epi8(out8 + r, k, v);
    }
  }
}

// i-GELU on [begin, end); needs the product bound of geluVectorFits and shift in [16, 63].
LOWBIT_TARGET_AVX512 void geluAvx512(int64_t begin, int64_t end, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo,
                                      int32_t hi, int32_t erfClip, int32_t erfA, int8_t* out) {
  const __m512i M = _mm512_set1_epi64(multiplier), s = _mm512_set1_epi64(shift);
  const __m512i lov = _mm512_set1_epi64(lo), hiv = _mm512_set1_epi64(hi);
  const __m512i clip = _mm512_set1_epi64(erfClip), A = _mm512_set1_epi64(erfA);
  const __m512i erfHalf = _mm512_set1_epi64(int64_t{1} << 23), unit = _mm512_set1_epi64(32768);
  for (int64_t i = begin; i < end; i += 8) {
    const __mmask8 k = laneMask(end - i);
    const __m512i v = load32(k, t + i);
    const __m512i c = _mm512_sub_epi64(_mm512_min_epi64(_mm512_abs_epi64(v), clip), clip);
    const __m512i erf = _mm512_add_epi64(_mm512_srai_epi64(_mm512_add_epi64(_mm512_mullo_epi64(A, _mm512_mul_epi32(c, c)), erfHalf), 24), unit);
    const __m512i signedErf = _mm512_mask_sub_epi64(erf, _mm512_movepi64_mask(v), _mm512_setzero_si512(), erf);
    const __m512i g = _mm512_mullo_epi64(v, _mm512_add_epi64(unit, signedErf));
    _mm512_mask_cvtepi64_storeu_epi8(out + i, k, clampVec(rqVec(g, M, s), lov, hiv));
  }
}

// i-GELU's |g| = |t|·|2^15 ± erf| stays below 2^48 for |t| <= 2^20 (the binding's bound).
bool geluVectorFits(int32_t erfClip, int32_t erfA) {
  const double erfMax = std::fabs(static_cast<double>(erfA)) * static_cast<double>(erfClip) * static_cast<double>(erfClip) / 16777216.0 + 32768.0 + 1.0;
  return (32768.0 + erfMax) * 1048576.0 < static_cast<double>(kVecInputLimit);
}

// fc1's output stage and i-GELU in one pass over a row: t = clamp(rq(a + bias; mult, shift), lo, hi) (|t| <= 2^20),
// then out = clamp(rq(t·(2^15 + intErf(t)); M, n), glo, ghi). Needs every shift in [16, 63] and geluVectorFits.
LOWBIT_TARGET_AVX512 void requantizeGeluRowAvx512(int64_t R, const int32_t* a, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                                                   int32_t lo, int32_t hi, const IntTfGelu& g, int8_t* out) {
  const __m512i lov = _mm512_set1_epi64(lo), hiv = _mm512_set1_epi64(hi);
  const __m512i M = _mm512_set1_epi64(g.multiplier), s = _mm512_set1_epi64(g.shift);
  const __m512i glo = _mm512_set1_epi64(g.lo), ghi = _mm512_set1_epi64(g.hi);
  const __m512i clip = _mm512_set1_epi64(g.erfClip), A = _mm512_set1_epi64(g.erfA);
  const __m512i erfHalf = _mm512_set1_epi64(int64_t{1} << 23), unit = _mm512_set1_epi64(32768);
  for (int64_t r = 0; r < R; r += 8) {
    const __mmask8 k = laneMask(R - r);
    const __m512i v = clampVec(rqVec(_mm512_add_epi64(load32(k, a + r), load32(k, bias + r)), load32(k, mult + r), load32(k, shift + r)), lov, hiv);
    const __m512i c = _mm512_sub_epi64(_mm512_min_epi64(_mm512_abs_epi64(v), clip), clip);
    const __m512i erf = _mm512_add_epi64(_mm512_srai_epi64(_mm512_add_epi64(_mm512_mullo_epi64(A, _mm512_mul_epi32(c, c)), erfHalf), 24), unit);
    const __m512i signedErf = _mm512_mask_sub_epi64(erf, _mm512_movepi64_mask(v), _mm512_setzero_si512(), erf);
    const __m512i product = _mm512_mullo_epi64(v, _mm512_add_epi64(unit, signedErf));
    _mm512_mask_cvtepi64_storeu_epi8(out + r, k, clampVec(rqVec(product, M, s), glo, ghi));
  }
}

// The head's float step over a row: out[r] = float((a[r] + bias[r])·scale[r]), the product in double (exact operands,
// one rounding) and then rounded to float32, as the TypeScript loop stores it into a Float32Array.
LOWBIT_TARGET_AVX512 void headRowAvx512(int64_t V, const int32_t* a, const int32_t* bias, const float* scale, float* out) {
  for (int64_t r = 0; r < V; r += 8) {
    const __mmask8 k = laneMask(V - r);
    const __m512d sum = _mm512_cvtepi64_pd(_mm512_add_epi64(load32(k, a + r), load32(k, bias + r)));
    const __m512d product = _mm512_mul_pd(sum, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, scale + r)));
    _mm256_mask_storeu_ps(out + r, k, _mm512_cvtpd_ps(product));
  }
}

// Scratch of one thread's attention tasks, kept across calls (grown when a call needs more).
struct AttentionScratch {
  std::vector<int32_t> keyPairs, valuePairs, queryPairs, dots, probs, acc;
  std::vector<int64_t> scores;
};

template <class T>
T* grown(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

// ⌊2^46 / sum⌋ for 2^15 < sum < 2^53: a double quotient (within 1 of it: the quotient is below 2^31), corrected by
// the exact remainder (an integer division costs more than the rest of a query's softmax).
inline int64_t reciprocalOf(int64_t sum) {
  constexpr int64_t top = int64_t{1} << kReciprocalBits;
  int64_t q = static_cast<int64_t>(static_cast<double>(top) / static_cast<double>(sum));
  const int64_t rem = top - q * sum;
  if (rem < 0) q--;
  else if (rem >= sum) q++;
  return q;
}

// intExp on 8 lanes of d <= 0 (|d| <= 2^25); lanes outside `lanes` give 0. z = ⌊−d / ln2⌋ from a double
// quotient: −d < 2^26 and ln2 = 2839, so a non-integer quotient is at least 1/2839 from an integer, far
// beyond the double's error, and an integer one is exact.
TF_AVX512_INLINE __m512i intExpVec(__mmask8 lanes, __m512i d) {
  const __m512i z = _mm512_cvttpd_epi64(_mm512_div_pd(_mm512_cvtepi64_pd(_mm512_sub_epi64(_mm512_setzero_si512(), d)), _mm512_set1_pd(static_cast<double>(kLn2))));
  const __mmask8 live = lanes & _mm512_cmple_epi64_mask(z, _mm512_set1_epi64(30));
  const __m512i t = _mm512_add_epi64(_mm512_add_epi64(d, _mm512_mul_epi32(z, _mm512_set1_epi64(kLn2))), _mm512_set1_epi64(kPolyB));
  const __m512i square = _mm512_mul_epi32(t, t);  // t in (2703, 5542]
  const __m512i poly = _mm512_add_epi64(_mm512_srai_epi64(_mm512_add_epi64(_mm512_mul_epi32(square, _mm512_set1_epi64(kPolyA)), _mm512_set1_epi64(int64_t{1} << (kPolyShift - 1))), kPolyShift),
                                        _mm512_set1_epi64(kPolyC));
  const __m512i half = _mm512_srli_epi64(_mm512_sllv_epi64(_mm512_set1_epi64(1), z), 1);  // 2^(z−1), 0 for z = 0
  return _mm512_maskz_srlv_epi64(live, _mm512_add_epi64(poly, half), z);
}

// The attention of the tasks [begin, end) (task = n·H + hd), as attentionScalar. Needs the three shifts in [16, 63].
// Both products run on vpmaddwd (int16 pairs → int32, exact: |q|, |k| <= 128, 0 <= p <= 255, |v| <= 128) over
// transposed copies of the task's cache: keyPairs[c/2][j] holds (k[j][c], k[j][c+1]), so 16 keys' dots come from
// ⌈d/2⌉ multiply-adds with the query's pairs broadcast; valuePairs[j/2][c] holds (v[j][c], v[j+1][c]), so 16
// channels of Σ p·v come from ⌈L/2⌉ multiply-adds with the probabilities' pairs broadcast.
template <class QKV>
LOWBIT_TARGET_AVX512 void attentionAvx512(const IntTfAttention& p, const QKV* qkv, int8_t* keys, int8_t* values, int8_t* context,
                                          int64_t begin, int64_t end, AttentionScratch& scratch) {
  const int64_t H = p.heads, d = p.headDim, E = H * d, W = 3 * E, steps = p.steps, cap = p.capacity;
  const int64_t total = p.past + steps;
  const int64_t keyLanes = (total + 15) / 16 * 16, channelLanes = (d + 15) / 16 * 16;
  const int64_t channelPairs = (d + 1) / 2, keyPairCount = (total + 1) / 2;
  // Few queries per task (cached decoding: one) do not pay for the transposed copies: their products go key by key.
  const bool transpose = steps >= 4;
  int16_t* kt = transpose ? reinterpret_cast<int16_t*>(grown(scratch.keyPairs, channelPairs * keyLanes)) : nullptr;
  int16_t* vt = transpose ? reinterpret_cast<int16_t*>(grown(scratch.valuePairs, keyPairCount * channelLanes)) : nullptr;
  const int64_t queryPairWords = (d + 31) / 32 * 16;  // the query's int16 channels padded to 32
  int32_t* queryPairs = grown(scratch.queryPairs, queryPairWords);
  int32_t* dots = grown(scratch.dots, keyLanes);
  int64_t* scores = grown(scratch.scores, keyLanes);
  int32_t* probs = grown(scratch.probs, keyLanes + 1);
  int32_t* acc = grown(scratch.acc, channelLanes);
  const __m512i scoreM = _mm512_set1_epi64(p.scoreMult), scoreS = _mm512_set1_epi64(p.scoreShift);
  const __m512i probsM = _mm512_set1_epi64(p.probsMult), probsS = _mm512_set1_epi64(p.probsShift), probsMax = _mm512_set1_epi64(p.probsMax);
  const __m512i ctxM = _mm512_set1_epi64(p.contextMult), ctxS = _mm512_set1_epi64(p.contextShift);
  const __m512i ctxLo = _mm512_set1_epi64(p.contextMin), ctxHi = _mm512_set1_epi64(p.contextMax);
  const __m512i wideLo = _mm512_set1_epi64(-kWide), wideHi = _mm512_set1_epi64(kWide);
  const __m512i p16Half = _mm512_set1_epi64(int64_t{1} << (kReciprocalBits - kProb16Frac - 1));
  for (int64_t task = begin; task < end; task++) {
    const int64_t n = task / H, hd = task % H;
    int8_t* K = keys + task * cap * d;
    int8_t* Vv = values + task * cap * d;
    for (int64_t t = 0; t < steps; t++) {
      const QKV* src = qkv + (n * steps + t) * W + hd * d;
      int8_t* k = K + (p.past + t) * d;
      int8_t* v = Vv + (p.past + t) * d;
      if constexpr (sizeof(QKV) == 1) {
        std::memcpy(k, src + E, static_cast<size_t>(d));
        std::memcpy(v, src + 2 * E, static_cast<size_t>(d));
      } else {
        for (int64_t c = 0; c < d; c += 16) {
          const __mmask16 lanes = laneMask16(d - c);
          _mm512_mask_cvtepi32_storeu_epi8(k + c, lanes, _mm512_maskz_loadu_epi32(lanes, src + E + c));
          _mm512_mask_cvtepi32_storeu_epi8(v + c, lanes, _mm512_maskz_loadu_epi32(lanes, src + 2 * E + c));
        }
      }
    }
    // The transposed pairs of positions 0..total−1 (lanes past total or d are never read into a result:
    // their scores are masked, their channels not stored, and the missing halves of odd pairs meet a 0).
    // Key pairs: 16 rows' bytes 2c, 2c + 1 by one gather of 4 bytes each, sign-extended into the int16 halves
    // (the 2 bytes past them are never used: they meet a 0 half of the query or are dropped). A gather
    // could read up to 3 bytes past the last row of the whole buffer: that row (task's last, the cache
    // full) is copied by scalar stores.
    if (transpose) {
      const int64_t gathered = task == p.batch * H - 1 && total == cap ? total - 1 : total;
      const __m512i rowOffsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int32_t>(d)));
      for (int64_t j = 0; j < gathered; j += 16) {
        const __mmask16 lanes = laneMask16(gathered - j);
        for (int64_t c = 0; c < channelPairs; c++) {
          const __m512i word = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lanes, rowOffsets, K + j * d + 2 * c, 1);
          const __m512i low = _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(word, 24), 24), _mm512_set1_epi32(0xffff));
          const __m512i high = _mm512_slli_epi32(_mm512_srai_epi32(_mm512_slli_epi32(word, 16), 24), 16);
          _mm512_storeu_si512(kt + (c * keyLanes + j) * 2, _mm512_or_si512(low, high));
        }
      }
      for (int64_t j = gathered; j < total; j++) {
        for (int64_t c = 0; c < d; c++) kt[((c >> 1) * keyLanes + j) * 2 + (c & 1)] = K[j * d + c];
      }
    }
    // Value pairs: rows j and j + 1 widened to int32 and interleaved as int16 halves, 16 channels at a time.
    for (int64_t j = 0; transpose && j < total; j += 2) {
      const int8_t* first = Vv + j * d;
      const int8_t* second = j + 1 < total ? first + d : nullptr;
      for (int64_t c = 0; c < d; c += 16) {
        const __mmask16 lanes = laneMask16(d - c);
        const __m512i low = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, first + c)), _mm512_set1_epi32(0xffff));
        const __m512i high = second ? _mm512_slli_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, second + c)), 16) : _mm512_setzero_si512();
        _mm512_storeu_si512(vt + ((j >> 1) * channelLanes + c) * 2, _mm512_or_si512(low, high));
      }
    }
    for (int64_t t = 0; t < steps; t++) {
      const QKV* q = qkv + (n * steps + t) * W + hd * d;
      const int64_t L = p.past + t + 1;
      for (int64_t c = 0; c < channelPairs; c++) {
        const uint32_t second = 2 * c + 1 < d ? static_cast<uint32_t>(static_cast<int32_t>(q[2 * c + 1])) : 0u;
        queryPairs[c] = static_cast<int32_t>((static_cast<uint32_t>(static_cast<int32_t>(q[2 * c])) & 0xffffu) | (second << 16));
      }
      for (int64_t c = channelPairs; c < queryPairWords; c++) queryPairs[c] = 0;  // up to 32 channels (the key-by-key form reads them)
      if (transpose) {
        for (int64_t j = 0; j < L; j += 16) {
          __m512i dot = _mm512_setzero_si512();
          for (int64_t c = 0; c < channelPairs; c++) {
            dot = _mm512_add_epi32(dot, _mm512_madd_epi16(_mm512_loadu_si512(kt + (c * keyLanes + j) * 2), _mm512_set1_epi32(queryPairs[c])));
          }
          _mm512_storeu_si512(dots + j, dot);
        }
      } else {
        // Key by key: 32 channels of k as int16 against the query's (a reduction per key).
        for (int64_t j = 0; j < L; j++) {
          const int8_t* kr = K + j * d;
          __m512i dot = _mm512_setzero_si512();
          for (int64_t c = 0; c < d; c += 32) {
            const __mmask32 lanes = d - c >= 32 ? 0xffffffffu : (1u << (d - c)) - 1;
            dot = _mm512_add_epi32(dot, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(lanes, kr + c)), _mm512_loadu_si512(queryPairs + c / 2)));
          }
          dots[j] = _mm512_reduce_add_epi32(dot);
        }
      }
      __m512i top = _mm512_set1_epi64(INT32_MIN);
      for (int64_t j = 0; j < L; j += 8) {
        const __mmask8 lanes = laneMask(L - j);
        const __m512i s = clampVec(rqVec(load32(lanes, dots + j), scoreM, scoreS), wideLo, wideHi);
        _mm512_storeu_si512(scores + j, s);
        top = _mm512_mask_max_epi64(top, lanes, top, s);
      }
      const __m512i topv = _mm512_set1_epi64(_mm512_reduce_max_epi64(top));
      __m512i sums = _mm512_setzero_si512();
      for (int64_t j = 0; j < L; j += 8) {
        const __mmask8 lanes = laneMask(L - j);
        const __m512i ex = intExpVec(lanes, _mm512_sub_epi64(_mm512_loadu_si512(scores + j), topv));
        _mm512_storeu_si512(scores + j, ex);
        sums = _mm512_add_epi64(sums, ex);
      }
      // Σ e >= intExp(0) > 2^15, so the reciprocal < 2^31 and e·reciprocal < 2^47.
      const __m512i reciprocal = _mm512_set1_epi64(reciprocalOf(_mm512_reduce_add_epi64(sums)));
      for (int64_t j = 0; j < L; j += 8) {
        const __mmask8 lanes = laneMask(L - j);
        const __m512i p16 = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epu32(_mm512_loadu_si512(scores + j), reciprocal), p16Half), kReciprocalBits - kProb16Frac);
        _mm512_mask_cvtepi64_storeu_epi32(probs + j, lanes, _mm512_min_epi64(rqVec(p16, probsM, probsS), probsMax));
      }
      probs[L] = 0;  // the missing half of an odd last pair
      // Σ p·v, 16 channels at a time in a register (int32, as attentionScalar; a zero probability adds nothing).
      for (int64_t c = 0; c < d; c += 16) {
        __m512i sum = _mm512_setzero_si512();
        if (transpose) {
          for (int64_t j = 0; j < L; j += 2) {
            const uint32_t pair = (static_cast<uint32_t>(probs[j]) & 0xffffu) | (static_cast<uint32_t>(probs[j + 1]) << 16);
            const __m512i rows = _mm512_loadu_si512(vt + ((j >> 1) * channelLanes + c) * 2);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(rows, _mm512_set1_epi32(static_cast<int32_t>(pair))));
          }
        } else {
          const __mmask16 lanes = laneMask16(d - c);
          for (int64_t j = 0; j < L; j++) {
            const __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, Vv + j * d + c));
            sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(v, _mm512_set1_epi32(probs[j])));
          }
        }
        _mm512_storeu_si512(acc + c, sum);
      }
      int8_t* out = context + (n * steps + t) * E + hd * d;
      for (int64_t c = 0; c < d; c += 8) {
        const __mmask8 lanes = laneMask(d - c);
        _mm512_mask_cvtepi64_storeu_epi8(out + c, lanes, clampVec(rqVec(load32(lanes, acc + c), ctxM, ctxS), ctxLo, ctxHi));
      }
    }
  }
}

// ---------------------------------------------------------------- AVX2 loops
// The same integers with 4 int64 lanes per ymm (as the AVX2 LSTM/GRU cells, native/irnn-cell.h), for CPUs
// without AVX-512. The bounds are those of the AVX-512 loops (every requantization input |a| < 2^48, shifts
// in [16, 63]; checked per call, the scalar loop otherwise). The lanes past the last whole vector of a row run
// the scalar formulas of the same integers. AVX2 lacks the 64-bit abs, min / max, arithmetic shift and
// 64-bit product: they are built from compares, blends and 32 × 32 → 64-bit products below.

#define TF_AVX2_INLINE LOWBIT_TARGET_AVX2 inline __attribute__((always_inline))

// −1 in the lanes where v < 0, else 0.
TF_AVX2_INLINE __m256i signOf4(__m256i v) { return _mm256_cmpgt_epi64(_mm256_setzero_si256(), v); }
// v with its sign flipped where `negative` is −1 (two's complement: (v ^ −1) − (−1) = −v).
TF_AVX2_INLINE __m256i negateWhere4(__m256i v, __m256i negative) { return _mm256_sub_epi64(_mm256_xor_si256(v, negative), negative); }
TF_AVX2_INLINE __m256i abs4(__m256i v) { return negateWhere4(v, signOf4(v)); }
TF_AVX2_INLINE __m256i min4(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }
TF_AVX2_INLINE __m256i max4(__m256i a, __m256i b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b)); }
TF_AVX2_INLINE __m256i clamp4(__m256i v, __m256i lo, __m256i hi) { return min4(max4(v, lo), hi); }
// ⌊v / 2^n⌋ (an arithmetic shift): for v < 0, ~v >= 0 and ~⌊~v / 2^n⌋ = ⌊v / 2^n⌋.
TF_AVX2_INLINE __m256i sra4(__m256i v, int n) {
  const __m256i negative = signOf4(v);
  return _mm256_xor_si256(_mm256_srli_epi64(_mm256_xor_si256(v, negative), n), negative);
}

// rqVec on 4 lanes (same bounds and result: |a| < 2^48, m an int32 sign-extended, s in [16, 63]).
TF_AVX2_INLINE __m256i rq4(__m256i a, __m256i m, __m256i s) {
  const __m256i negative = signOf4(_mm256_xor_si256(a, m));
  const __m256i ua = abs4(a), um = abs4(m);
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one));
  if (_mm256_testz_si256(ua, _mm256_set1_epi64x(static_cast<int64_t>(0xffffffff00000000ull)))) {
    // every |a| < 2^32: a·|m| + 2^(s−1) < 2^63 + 2^62, no wrap.
    return negateWhere4(_mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epu32(ua, um), half), s), negative);
  }
  const __m256i high = _mm256_mul_epu32(_mm256_srli_epi64(ua, 16), um);
  const __m256i low = _mm256_add_epi64(_mm256_mul_epu32(_mm256_and_si256(ua, _mm256_set1_epi64x(0xffff)), um), half);
  __m256i r = _mm256_srlv_epi64(_mm256_add_epi64(high, _mm256_srli_epi64(low, 16)), _mm256_sub_epi64(s, _mm256_set1_epi64x(16)));
  // min(r, 2^62) as unsigned numbers (the sign bit flipped for the signed compare).
  const __m256i flip = _mm256_set1_epi64x(INT64_MIN), cap = _mm256_set1_epi64x(int64_t{1} << 62);
  r = _mm256_blendv_epi8(r, cap, _mm256_cmpgt_epi64(_mm256_xor_si256(r, flip), _mm256_xor_si256(cap, flip)));
  return negateWhere4(r, negative);
}

// 4 int32 / int8 as int64 lanes; 4 int64 lanes (int32 values) stored as int32 / int8.
TF_AVX2_INLINE __m256i load32x4(const int32_t* p) { return _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
TF_AVX2_INLINE __m256i load8x4(const int8_t* p) {
  int32_t word;
  std::memcpy(&word, p, 4);
  return _mm256_cvtepi8_epi64(_mm_cvtsi32_si128(word));
}
TF_AVX2_INLINE __m128i low32x4(__m256i v) { return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6))); }
TF_AVX2_INLINE void store32x4(int32_t* p, __m256i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), low32x4(v)); }
TF_AVX2_INLINE void store8x4(int8_t* p, __m256i v) {
  const int32_t word = _mm_cvtsi128_si32(_mm_shuffle_epi8(low32x4(v), _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)));
  std::memcpy(p, &word, 4);
}

// One lane of requantizeScalar (the tails of the AVX2 rows).
inline void requantizeOne(int64_t r, const int32_t* a, const int32_t* bias, const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi,
                          int mode, int32_t* out32, int8_t* out8) {
  const int64_t v = clampTo(rq(static_cast<int64_t>(a[r]) + bias[r], mult[r], shift[r]), lo, hi);
  if (mode == 0) out32[r] = static_cast<int32_t>(v);
  else if (mode == 1) out32[r] = static_cast<int32_t>(clampTo(out32[r] + v, -kWide, kWide));
  else out8[r] = static_cast<int8_t>(v);
}

// One lane of geluScalar.
inline int8_t geluOne(int64_t v, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi, int32_t erfClip, int32_t erfA) {
  const int64_t c = std::min<int64_t>(v < 0 ? -v : v, erfClip) - erfClip;
  const int64_t erf = roundShift(static_cast<int64_t>(erfA) * c * c, 24) + 32768;
  const int64_t g = v * (32768 + (v < 0 ? -erf : erf));
  return static_cast<int8_t>(clampTo(rq(g, multiplier, shift), lo, hi));
}

LOWBIT_TARGET_AVX2 void requantizeRowAvx2(int64_t R, const int32_t* a, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                                           int32_t lo, int32_t hi, int mode, int32_t* out32, int8_t* out8) {
  const __m256i lov = _mm256_set1_epi64x(lo), hiv = _mm256_set1_epi64x(hi);
  const __m256i wideLo = _mm256_set1_epi64x(-kWide), wideHi = _mm256_set1_epi64x(kWide);
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const __m256i sum = _mm256_add_epi64(load32x4(a + r), load32x4(bias + r));  // |sum| <= 2^32
    const __m256i v = clamp4(rq4(sum, load32x4(mult + r), load32x4(shift + r)), lov, hiv);
    if (mode == 0) store32x4(out32 + r, v);
    else if (mode == 1) store32x4(out32 + r, clamp4(_mm256_add_epi64(load32x4(out32 + r), v), wideLo, wideHi));
    else store8x4(out8 + r, v);
  }
  for (; r < R; r++) requantizeOne(r, a, bias, mult, shift, lo, hi, mode, out32, out8);
}

// i-GELU's erf-based factor 2^15 ± intErf(v) on 4 lanes of int32 values (|v| <= 2^20 after the clamps;
// geluVectorFits bounds the factor below 2^28 and t·factor below 2^48). A·c² by 32 × 32 → 64-bit products of
// |A| with the halves of c² (modulo 2^64, as the AVX-512 loop's vpmullq).
TF_AVX2_INLINE __m256i geluProduct4(__m256i v, __m256i clip, __m256i absA, bool negativeA) {
  const __m256i c = _mm256_sub_epi64(min4(abs4(v), clip), clip);
  const __m256i square = _mm256_mul_epi32(c, c);
  __m256i product = _mm256_add_epi64(_mm256_mul_epu32(square, absA), _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(square, 32), absA), 32));
  if (negativeA) product = _mm256_sub_epi64(_mm256_setzero_si256(), product);
  const __m256i erf = _mm256_add_epi64(sra4(_mm256_add_epi64(product, _mm256_set1_epi64x(int64_t{1} << 23)), 24), _mm256_set1_epi64x(32768));
  const __m256i factor = _mm256_add_epi64(_mm256_set1_epi64x(32768), negateWhere4(erf, signOf4(v)));
  return _mm256_mul_epi32(v, factor);
}

LOWBIT_TARGET_AVX2 void geluAvx2(int64_t begin, int64_t end, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
                                  int32_t erfClip, int32_t erfA, int8_t* out) {
  const __m256i M = _mm256_set1_epi64x(multiplier), s = _mm256_set1_epi64x(shift);
  const __m256i lov = _mm256_set1_epi64x(lo), hiv = _mm256_set1_epi64x(hi);
  const __m256i clip = _mm256_set1_epi64x(erfClip), absA = _mm256_set1_epi64x(erfA < 0 ? -static_cast<int64_t>(erfA) : erfA);
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) store8x4(out + i, clamp4(rq4(geluProduct4(load32x4(t + i), clip, absA, erfA < 0), M, s), lov, hiv));
  for (; i < end; i++) out[i] = geluOne(t[i], multiplier, shift, lo, hi, erfClip, erfA);
}

LOWBIT_TARGET_AVX2 void requantizeGeluRowAvx2(int64_t R, const int32_t* a, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                                               int32_t lo, int32_t hi, const IntTfGelu& g, int8_t* out) {
  const __m256i lov = _mm256_set1_epi64x(lo), hiv = _mm256_set1_epi64x(hi);
  const __m256i M = _mm256_set1_epi64x(g.multiplier), s = _mm256_set1_epi64x(g.shift);
  const __m256i glo = _mm256_set1_epi64x(g.lo), ghi = _mm256_set1_epi64x(g.hi);
  const __m256i clip = _mm256_set1_epi64x(g.erfClip), absA = _mm256_set1_epi64x(g.erfA < 0 ? -static_cast<int64_t>(g.erfA) : g.erfA);
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const __m256i v = clamp4(rq4(_mm256_add_epi64(load32x4(a + r), load32x4(bias + r)), load32x4(mult + r), load32x4(shift + r)), lov, hiv);
    store8x4(out + r, clamp4(rq4(geluProduct4(v, clip, absA, g.erfA < 0), M, s), glo, ghi));
  }
  for (; r < R; r++) {
    const int64_t v = clampTo(rq(static_cast<int64_t>(a[r]) + bias[r], mult[r], shift[r]), lo, hi);
    out[r] = geluOne(v, g.multiplier, g.shift, g.lo, g.hi, g.erfClip, g.erfA);
  }
}

// One LayerNorm row on 4 lanes (layerNormRowAvx512's integers and bounds; the same caller checks); false for a
// constant row. The quotients n = round(v·sqrtSize / r) as there, in doubles: v (|v| <= 2^15, an int32) times
// sqrtSize (< 2^31) is exact (< 2^46), and |n| < 2^22 converts back through int32 (AVX2 has no int64 ↔ double).
LOWBIT_TARGET_AVX2 bool layerNormRowAvx2(const IntTfLayerNorm& p, const int32_t* x, int8_t* out, int64_t* e) {
  const int64_t D = p.size, whole = D / 4 * 4;
  __m256i sum = _mm256_setzero_si256();
  for (int64_t i = 0; i < whole; i += 4) sum = _mm256_add_epi64(sum, load32x4(x + i));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  int64_t S = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (int64_t i = whole; i < D; i++) S += x[i];
  const __m256i Dv = _mm256_set1_epi64x(D), Sv = _mm256_set1_epi64x(S);
  __m256i top = _mm256_setzero_si256();
  for (int64_t i = 0; i < whole; i += 4) top = max4(top, abs4(_mm256_sub_epi64(_mm256_mul_epi32(load32x4(x + i), Dv), Sv)));
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), top);
  int64_t m = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
  for (int64_t i = whole; i < D; i++) {
    const int64_t c = D * x[i] - S;
    m = std::max(m, c < 0 ? -c : c);
  }
  if (m == 0) return false;
  const int k = bitLength(static_cast<uint64_t>(m)) - 15;
  const __m256i kHalf = _mm256_set1_epi64x(k > 0 ? int64_t{1} << (k - 1) : 0);
  const __m128i upCount = _mm_cvtsi64_si128(k > 0 ? 0 : -k);
  __m256i squares = _mm256_setzero_si256();
  for (int64_t i = 0; i < whole; i += 4) {
    const __m256i c = _mm256_sub_epi64(_mm256_mul_epi32(load32x4(x + i), Dv), Sv);
    const __m256i v = k > 0 ? sra4(_mm256_add_epi64(c, kHalf), k) : _mm256_sll_epi64(c, upCount);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + i), v);
    squares = _mm256_add_epi64(squares, _mm256_mul_epi32(v, v));
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), squares);
  int64_t Q = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (int64_t i = whole; i < D; i++) {
    const int64_t c = D * x[i] - S;
    const int64_t v = k > 0 ? roundShift(c, k) : c * (int64_t{1} << -k);
    e[i] = v;
    Q += v * v;
  }
  const int64_t r = layerNormRoot(p, D, k, Q);
  const __m256d rd = _mm256_set1_pd(static_cast<double>(r)), sqrtSize = _mm256_set1_pd(static_cast<double>(p.sqrtSize));
  const __m256d inverse = _mm256_set1_pd(1.0 / static_cast<double>(r)), oned = _mm256_set1_pd(1.0), zerod = _mm256_setzero_pd();
  const __m256d signBit = _mm256_set1_pd(-0.0);
  const __m256i M = _mm256_set1_epi64x(p.multiplier), shift = _mm256_set1_epi64x(p.shift);
  const __m256i lo = _mm256_set1_epi64x(p.outMin), hi = _mm256_set1_epi64x(p.outMax);
  const __m256i betaHalf = _mm256_set1_epi64x(int64_t{1} << (kBetaFrac - 1));
  for (int64_t i = 0; i < whole; i += 4) {
    // |v| <= 2^15: its low 32 bits are the int32 value.
    const __m128i v32 = low32x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(e + i)));
    const __m256d num = _mm256_mul_pd(_mm256_cvtepi32_pd(v32), sqrtSize);
    const __m256d a = _mm256_andnot_pd(signBit, num);
    __m256d q = _mm256_floor_pd(_mm256_mul_pd(a, inverse));
    __m256d rem = _mm256_fnmadd_pd(q, rd, a);
    const __m256d under = _mm256_cmp_pd(rem, zerod, _CMP_LT_OQ);
    q = _mm256_sub_pd(q, _mm256_and_pd(under, oned));
    rem = _mm256_add_pd(rem, _mm256_and_pd(under, rd));
    const __m256d over = _mm256_cmp_pd(rem, rd, _CMP_GE_OQ);
    q = _mm256_add_pd(q, _mm256_and_pd(over, oned));
    rem = _mm256_sub_pd(rem, _mm256_and_pd(over, rd));
    q = _mm256_add_pd(q, _mm256_and_pd(_mm256_cmp_pd(_mm256_add_pd(rem, rem), rd, _CMP_GE_OQ), oned));
    const __m256i magnitude = _mm256_cvtepi32_epi64(_mm256_cvttpd_epi32(q));
    const __m256i negative = _mm256_castpd_si256(_mm256_cmp_pd(num, zerod, _CMP_LT_OQ));
    const __m256i n = negateWhere4(magnitude, negative);
    const __m256i g = _mm256_mul_epi32(load32x4(p.gamma + i), n);
    const __m256i y = sra4(_mm256_add_epi64(_mm256_add_epi64(rq4(g, M, shift), load32x4(p.beta + i)), betaHalf), kBetaFrac);
    store8x4(out + i, clamp4(y, lo, hi));
  }
  for (int64_t i = whole; i < D; i++) {
    const int64_t n = roundDiv(e[i] * p.sqrtSize, r);
    const int64_t y = roundShift(rq(static_cast<int64_t>(p.gamma[i]) * n, p.multiplier, p.shift) + p.beta[i], kBetaFrac);
    out[i] = static_cast<int8_t>(clampTo(y, p.outMin, p.outMax));
  }
  return true;
}

// headRowAvx512 on 4 lanes: acc and bias converted to double apart and added (exact: |sum| < 2^33), times the
// scale in double (one rounding), then rounded to float32, as the scalar loop.
LOWBIT_TARGET_AVX2 void headRowAvx2(int64_t V, const int32_t* a, const int32_t* bias, const float* scale, float* out) {
  int64_t r = 0;
  for (; r + 4 <= V; r += 4) {
    const __m256d sum = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + r))),
                                      _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bias + r))));
    _mm_storeu_ps(out + r, _mm256_cvtpd_ps(_mm256_mul_pd(sum, _mm256_cvtps_pd(_mm_loadu_ps(scale + r)))));
  }
  for (; r < V; r++) out[r] = static_cast<float>(static_cast<double>(static_cast<int64_t>(a[r]) + bias[r]) * static_cast<double>(scale[r]));
}

// intExp on 4 lanes of d <= 0 (|d| <= 2^25, int32): z = ⌊−d / ln2⌋ from a double quotient (exact, as intExpVec's),
// lanes with z > 30 give 0.
TF_AVX2_INLINE __m256i intExp4(__m256i d) {
  const __m128i negD = low32x4(_mm256_sub_epi64(_mm256_setzero_si256(), d));
  const __m256i z = _mm256_cvtepi32_epi64(_mm256_cvttpd_epi32(_mm256_div_pd(_mm256_cvtepi32_pd(negD), _mm256_set1_pd(static_cast<double>(kLn2)))));
  const __m256i dead = _mm256_cmpgt_epi64(z, _mm256_set1_epi64x(30));
  const __m256i t = _mm256_add_epi64(_mm256_add_epi64(d, _mm256_mul_epi32(z, _mm256_set1_epi64x(kLn2))), _mm256_set1_epi64x(kPolyB));
  const __m256i square = _mm256_mul_epi32(t, t);  // t in (2703, 5542]: A·t² > 0
  const __m256i poly = _mm256_add_epi64(_mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(square, _mm256_set1_epi64x(kPolyA)), _mm256_set1_epi64x(int64_t{1} << (kPolyShift - 1))), kPolyShift),
                                        _mm256_set1_epi64x(kPolyC));
  const __m256i half = _mm256_srli_epi64(_mm256_sllv_epi64(_mm256_set1_epi64x(1), z), 1);  // 2^(z−1), 0 for z = 0
  return _mm256_andnot_si256(dead, _mm256_srlv_epi64(_mm256_add_epi64(poly, half), z));
}

// attentionScalar's loops for the tasks [begin, end) with the softmax on 4 lanes (scores' requantization, i-exp,
// probabilities) and the products in int32 loops the compiler vectorizes for AVX2. Needs the three shifts in [16, 63].
template <class QKV>
LOWBIT_TARGET_AVX2 void attentionAvx2(const IntTfAttention& p, const QKV* qkv, int8_t* keys, int8_t* values, int8_t* context, int64_t begin,
                                      int64_t end) {
  const int64_t H = p.heads, d = p.headDim, E = H * d, W = 3 * E, steps = p.steps, cap = p.capacity;
  const int64_t total = p.past + steps;
  thread_local std::vector<int32_t> dots, probs, q, acc;
  thread_local std::vector<int64_t> exps;
  int32_t* dotsP = grown(dots, total);
  int32_t* probsP = grown(probs, total);
  int32_t* qP = grown(q, d);
  int32_t* accP = grown(acc, d);
  int64_t* expsP = grown(exps, total);
  const __m256i scoreM = _mm256_set1_epi64x(p.scoreMult), scoreS = _mm256_set1_epi64x(p.scoreShift);
  const __m256i probsM = _mm256_set1_epi64x(p.probsMult), probsS = _mm256_set1_epi64x(p.probsShift), probsMax = _mm256_set1_epi64x(p.probsMax);
  const __m256i wideLo = _mm256_set1_epi64x(-kWide), wideHi = _mm256_set1_epi64x(kWide);
  const __m256i p16Half = _mm256_set1_epi64x(int64_t{1} << (kReciprocalBits - kProb16Frac - 1));
  for (int64_t task = begin; task < end; task++) {
    const int64_t n = task / H, hd = task % H;
    int8_t* K = keys + task * cap * d;
    int8_t* Vv = values + task * cap * d;
    appendKeysValues(p, qkv, task, K, Vv);
    for (int64_t t = 0; t < steps; t++) {
      const QKV* src = qkv + (n * steps + t) * W + hd * d;
      for (int64_t c = 0; c < d; c++) qP[c] = src[c];
      const int64_t L = p.past + t + 1, whole = L / 4 * 4;
      for (int64_t j = 0; j < L; j++) {
        const int8_t* k = K + j * d;
        int32_t dot = 0;
        for (int64_t c = 0; c < d; c++) dot += qP[c] * k[c];
        dotsP[j] = dot;
      }
      int64_t top = INT32_MIN;
      __m256i topv = _mm256_set1_epi64x(INT32_MIN);
      for (int64_t j = 0; j < whole; j += 4) {
        const __m256i sc = clamp4(rq4(load32x4(dotsP + j), scoreM, scoreS), wideLo, wideHi);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(expsP + j), sc);
        topv = max4(topv, sc);
      }
      alignas(32) int64_t lanes[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), topv);
      top = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
      for (int64_t j = whole; j < L; j++) {
        expsP[j] = clampTo(rq(dotsP[j], p.scoreMult, p.scoreShift), -kWide, kWide);
        top = std::max(top, expsP[j]);
      }
      const __m256i topAll = _mm256_set1_epi64x(top);
      __m256i sums = _mm256_setzero_si256();
      for (int64_t j = 0; j < whole; j += 4) {
        const __m256i ex = intExp4(_mm256_sub_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(expsP + j)), topAll));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(expsP + j), ex);
        sums = _mm256_add_epi64(sums, ex);
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sums);
      int64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
      for (int64_t j = whole; j < L; j++) {
        expsP[j] = intExp(expsP[j] - top);
        sum += expsP[j];
      }
      const int64_t reciprocal = reciprocalOf(sum);
      const __m256i recip = _mm256_set1_epi64x(reciprocal);
      for (int64_t j = 0; j < whole; j += 4) {
        const __m256i p16 = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epu32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(expsP + j)), recip), p16Half),
                                              kReciprocalBits - kProb16Frac);
        store32x4(probsP + j, min4(rq4(p16, probsM, probsS), probsMax));
      }
      for (int64_t j = whole; j < L; j++) {
        const int64_t code = rq(roundShift(expsP[j] * reciprocal, kReciprocalBits - kProb16Frac), p.probsMult, p.probsShift);
        probsP[j] = static_cast<int32_t>(code > p.probsMax ? p.probsMax : code);
      }
      std::fill(accP, accP + d, 0);
      for (int64_t j = 0; j < L; j++) {
        const int32_t pj = probsP[j];
        if (pj == 0) continue;
        const int8_t* v = Vv + j * d;
        for (int64_t c = 0; c < d; c++) accP[c] += pj * v[c];
      }
      int8_t* out = context + (n * steps + t) * E + hd * d;
      for (int64_t c = 0; c < d; c++) out[c] = static_cast<int8_t>(clampTo(rq(accP[c], p.contextMult, p.contextShift), p.contextMin, p.contextMax));
    }
  }
}

std::atomic<bool> vectorAllowed{true};

bool useAvx512() { return vectorAllowed.load(std::memory_order_relaxed) && activeIsa() == Isa::Avx512; }

bool useAvx2() { return vectorAllowed.load(std::memory_order_relaxed) && activeIsa() == Isa::Avx2; }

}  // namespace

const char* intTfShiftProblem(int32_t shift) {
  return shift < -32 || shift > 100 ? "a requantization shift is outside [-32, 100]" : nullptr;
}

void intTfSetVector(bool on) { vectorAllowed.store(on, std::memory_order_relaxed); }

const char* intTfLoops() { return useAvx512() ? "avx512" : useAvx2() ? "avx2" : "scalar"; }

void intTfEmbed(int64_t rows, int64_t steps, int64_t past, int64_t E, const int32_t* ids, const int8_t* table,
                const int32_t* mult, const int32_t* shift, const int32_t* positions, int32_t* x) {
  if (!useAvx512()) {
    embedScalar(rows, steps, past, E, ids, table, mult, shift, positions, x);
    return;
  }
  parallelFor(rows, static_cast<double>(rows * E), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; row++) {
      const int64_t id = ids[row];
      // The table rows of the ids 8 rows ahead (random rows of a table the rest of the forward evicts: their
      // loads from memory dominated this loop).
      if (row + 8 < end) {
        const int8_t* ahead = table + static_cast<int64_t>(ids[row + 8]) * E;
        for (int64_t b = 0; b < E; b += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + b), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(ahead + E - 1), _MM_HINT_T0);
      }
      const int32_t* pos = positions + (past + row % steps) * E;
      if (vecShift(shift[id])) {
        embedRowAvx512(E, table + id * E, mult[id], shift[id], pos, x + row * E);
      } else {
        embedScalar(1, 1, past + row % steps, E, ids + row, table, mult, shift, positions, x + row * E);
      }
    }
  });
}

void intTfLayerNormRows(const IntTfLayerNorm& p, int64_t rows, const int32_t* x, int8_t* out) {
  const int64_t D = p.size;
  if (useAvx2() && vecShift(p.shift) && p.sqrtSize < (int64_t{1} << 31)) {
    parallelFor(rows, static_cast<double>(rows * D) * 4, [&](int64_t begin, int64_t end) {
      thread_local std::vector<int64_t> e;
      if (static_cast<int64_t>(e.size()) < D) e.resize(static_cast<size_t>(D));
      for (int64_t r = begin; r < end; r++) {
        if (!layerNormRowAvx2(p, x + r * D, out + r * D, e.data())) layerNormRow(p, x + r * D, out + r * D, e.data());
      }
    });
    return;
  }
  if (!useAvx512() || !vecShift(p.shift) || p.sqrtSize >= (int64_t{1} << 31)) {
    layerNormScalar(p, rows, x, out);
    return;
  }
  parallelFor(rows, static_cast<double>(rows * D) * 3, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int64_t> e;
    if (static_cast<int64_t>(e.size()) < D) e.resize(static_cast<size_t>(D));
    for (int64_t r = begin; r < end; r++) {
      if (!layerNormRowAvx512(p, x + r * D, out + r * D, e.data())) layerNormRow(p, x + r * D, out + r * D, e.data());
    }
  });
}

void intTfRequantize(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult,
                     const int32_t* shift, int32_t lo, int32_t hi, int mode, int32_t* out32, int8_t* out8) {
  if (useAvx2() && vecShifts(shift, R)) {
    parallelFor(M, static_cast<double>(M * R) * 2, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; m++) {
        requantizeRowAvx2(R, acc + m * R, bias, mult, shift, lo, hi, mode, out32 ? out32 + m * R : nullptr, out8 ? out8 + m * R : nullptr);
      }
    });
    return;
  }
  if (!useAvx512() || !vecShifts(shift, R)) {
    requantizeScalar(M, R, acc, bias, mult, shift, lo, hi, mode, out32, out8);
    return;
  }
  parallelFor(M, static_cast<double>(M * R), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; m++) {
      requantizeRowAvx512(R, acc + m * R, bias, mult, shift, lo, hi, mode, out32 ? out32 + m * R : nullptr, out8 ? out8 + m * R : nullptr);
    }
  });
}

void intTfGelu(int64_t count, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
               int32_t erfClip, int32_t erfA, int8_t* out) {
  if (useAvx2() && vecShift(shift) && geluVectorFits(erfClip, erfA)) {
    const int64_t blocks = (count + 3) / 4;
    parallelFor(blocks, static_cast<double>(count) * 4, [&](int64_t begin, int64_t end) {
      geluAvx2(begin * 4, std::min(end * 4, count), t, multiplier, shift, lo, hi, erfClip, erfA, out);
    });
    return;
  }
  if (!useAvx512() || !vecShift(shift) || !geluVectorFits(erfClip, erfA)) {
    geluScalar(count, t, multiplier, shift, lo, hi, erfClip, erfA, out);
    return;
  }
  // Chunks of whole vectors (the last takes the tail).
  const int64_t blocks = (count + 7) / 8;
  parallelFor(blocks, static_cast<double>(count) * 2, [&](int64_t begin, int64_t end) {
    geluAvx512(begin * 8, std::min(end * 8, count), t, multiplier, shift, lo, hi, erfClip, erfA, out);
  });
}

void intTfRequantizeGelu(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                         int32_t lo, int32_t hi, const IntTfGelu& g, int8_t* out) {
  const bool fits = vecShifts(shift, R) && vecShift(g.shift) && geluVectorFits(g.erfClip, g.erfA);
  const bool vector = useAvx512() && fits, vector2 = useAvx2() && fits;
  parallelFor(M, static_cast<double>(M * R) * (vector ? 2 : vector2 ? 4 : 12), [&](int64_t begin, int64_t end) {
    if (vector) {
      for (int64_t m = begin; m < end; m++) requantizeGeluRowAvx512(R, acc + m * R, bias, mult, shift, lo, hi, g, out + m * R);
      return;
    }
    if (vector2) {
      for (int64_t m = begin; m < end; m++) requantizeGeluRowAvx2(R, acc + m * R, bias, mult, shift, lo, hi, g, out + m * R);
      return;
    }
    // The two scalar loops, row by row through a row of int32 codes.
    thread_local std::vector<int32_t> t;
    if (static_cast<int64_t>(t.size()) < R) t.resize(static_cast<size_t>(R));
    for (int64_t m = begin; m < end; m++) {
      requantizeScalar(1, R, acc + m * R, bias, mult, shift, lo, hi, 0, t.data(), nullptr);
      geluScalar(R, t.data(), g.multiplier, g.shift, g.lo, g.hi, g.erfClip, g.erfA, out + m * R);
    }
  });
}

void intTfHead(int64_t M, int64_t V, const int32_t* acc, const int32_t* bias, const float* scale, float* out) {
  const bool vector = useAvx512(), vector2 = useAvx2();
  parallelFor(M, static_cast<double>(M * V), [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; m++) {
      if (vector) {
        headRowAvx512(V, acc + m * V, bias, scale, out + m * V);
        continue;
      }
      if (vector2) {
        headRowAvx2(V, acc + m * V, bias, scale, out + m * V);
        continue;
      }
      for (int64_t r = 0; r < V; r++) {
        out[m * V + r] = static_cast<float>(static_cast<double>(static_cast<int64_t>(acc[m * V + r]) + bias[r]) * static_cast<double>(scale[r]));
      }
    }
  });
}

namespace {

template <class QKV>
void attention(const IntTfAttention& p, const QKV* qkv, int8_t* keys, int8_t* values, int8_t* context) {
  if (useAvx2() && vecShift(p.scoreShift) && vecShift(p.probsShift) && vecShift(p.contextShift)) {
    const double work = static_cast<double>(p.batch * p.heads) * static_cast<double>(p.steps) * static_cast<double>(p.past + p.steps) *
                        static_cast<double>(p.headDim + 8);
    parallelFor(p.batch * p.heads, work, [&](int64_t begin, int64_t end) { attentionAvx2(p, qkv, keys, values, context, begin, end); });
    return;
  }
  if (!useAvx512() || !vecShift(p.scoreShift) || !vecShift(p.probsShift) || !vecShift(p.contextShift)) {
    attentionScalar(p, qkv, keys, values, context);
    return;
  }
  const int64_t total = p.past + p.steps;
  const double work = static_cast<double>(p.batch * p.heads) * static_cast<double>(p.steps) * static_cast<double>(total) * static_cast<double>(p.headDim + 8);
  // A few tasks per thread: each claims a run of heads (the scratch is the thread's own).
  parallelFor(p.batch * p.heads, work, [&](int64_t begin, int64_t end) {
    thread_local AttentionScratch scratch;
    attentionAvx512(p, qkv, keys, values, context, begin, end, scratch);
  });
}

}  // namespace

void intTfAttention(const IntTfAttention& p, const int32_t* qkv, int8_t* keys, int8_t* values, int8_t* context) {
  attention(p, qkv, keys, values, context);
}

void intTfAttention(const IntTfAttention& p, const int8_t* qkv, int8_t* keys, int8_t* values, int8_t* context) {
  attention(p, qkv, keys, values, context);
}

// ---------------------------------------------------------------- the fused forward
namespace {

// Stage timers of intTfForward (off by default; bench/irnn/transformer-profile.ts turns them on): nanoseconds of CPU
// time per stage (CLOCK_THREAD_CPUTIME_ID: time slices taken by other processes do not count) summed over the
// threads (each thread times its own groups).
std::atomic<bool> profileOn{false};
std::atomic<int64_t> profileNs[kTfStages];

inline int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Adds the time since the last mark to `stage` (when profiling).
struct StageClock {
  bool on = profileOn.load(std::memory_order_relaxed);
  int64_t last = on ? nowNs() : 0;
  void mark(int stage) {
    if (!on) return;
    const int64_t t = nowNs();
    profileNs[stage].fetch_add(t - last, std::memory_order_relaxed);
    last = t;
  }
};

// One thread's buffers of intTfForward's groups, kept across calls (grown when a call needs more).
struct ForwardScratch {
  std::vector<uint8_t> a;     // the GEMM operand: int8 codes + 128 as u8 rows of ⌈K/4⌉·4 bytes
  std::vector<int32_t> acc;   // int32 accumulators of a group's rows
  std::vector<int32_t> last;  // the last rows of the group's sequences (headMode 2)
  std::vector<int8_t> h, qkv, context, u;
};

constexpr int64_t kHeadRows = 24;  // rows per head GEMM chunk (4 micro-tiles of 6): 24 × V int32 stay in L2

// acc [rows, l.out] = Σ x·w over int8 rows x [rows, l.in] (the serial VNNI / AVX2 / scalar GEMM of intgemm.cc).
void linearAcc(const IntTfLinear& l, int64_t rows, const int8_t* x, ForwardScratch& s, int32_t* acc) {
  const int64_t K = l.in, lda = (K + 3) / 4 * 4;
  uint8_t* A = grown(s.a, rows * lda);
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* src = reinterpret_cast<const uint8_t*>(x + r * K);
    uint8_t* dst = A + r * lda;
    for (int64_t k = 0; k < K; k++) dst[k] = src[k] ^ 0x80;
    for (int64_t k = K; k < lda; k++) dst[k] = 0;
  }
  gemmInt8Serial(rows, l.out, K, A, lda, l.packed, l.rowSums, -128, acc, l.out);
}

// The forward of the sequences [n0, n1) (rows n0·steps ..), on the calling thread (the intTf* calls inside a pool
// task run inline).
void forwardGroup(const IntTfModel& m, int64_t n0, int64_t n1, int64_t steps, int64_t past, int64_t capacity, const int32_t* ids,
                  int32_t* x, int headMode, float* logits, ForwardScratch& s) {
  const int64_t E = m.E, g = n1 - n0, rows = g * steps, r0 = n0 * steps;
  StageClock clock;
  int32_t* xg = x + r0 * E;
  intTfEmbed(rows, steps, past, E, ids + r0, m.table, m.tokenMult, m.tokenShift, m.positions, xg);
  clock.mark(kTfEmbed);
  for (int64_t bi = 0; bi < m.numBlocks; bi++) {
    const IntTfBlock& b = m.blocks[bi];
    int8_t* h = grown(s.h, rows * E);
    intTfLayerNormRows(b.ln1, rows, xg, h);
    clock.mark(kTfLayerNorm);
    int8_t* qkv = grown(s.qkv, rows * 3 * E);
    int32_t* acc = grown(s.acc, rows * std::max(3 * E, b.fc1.out));
    linearAcc(b.qkv, rows, h, s, acc);
    clock.mark(kTfQkvGemm);
    intTfRequantize(rows, 3 * E, acc, b.qkv.bias, b.qkv.mult, b.qkv.shift, b.qkv.lo, b.qkv.hi, 2, nullptr, qkv);
    clock.mark(kTfQkvOut);
    IntTfAttention a = b.attention;
    a.batch = g;
    a.steps = steps;
    a.past = past;
    a.capacity = capacity;
    int8_t* context = grown(s.context, rows * E);
    intTfAttention(a, static_cast<const int8_t*>(qkv), b.keys + n0 * capacity * E, b.values + n0 * capacity * E, context);
    clock.mark(kTfAttention);
    linearAcc(b.proj, rows, context, s, acc);
    clock.mark(kTfProjGemm);
    intTfRequantize(rows, E, acc, b.proj.bias, b.proj.mult, b.proj.shift, b.proj.lo, b.proj.hi, 1, xg, nullptr);
    clock.mark(kTfProjOut);
    intTfLayerNormRows(b.ln2, rows, xg, h);
    clock.mark(kTfLayerNorm);
    int8_t* u = grown(s.u, rows * b.fc1.out);
    linearAcc(b.fc1, rows, h, s, acc);
    clock.mark(kTfFc1Gemm);
    if (b.gelu) {
      intTfRequantizeGelu(rows, b.fc1.out, acc, b.fc1.bias, b.fc1.mult, b.fc1.shift, b.fc1.lo, b.fc1.hi, b.g, u);
    } else {
      intTfRequantize(rows, b.fc1.out, acc, b.fc1.bias, b.fc1.mult, b.fc1.shift, b.fc1.lo, b.fc1.hi, 2, nullptr, u);
    }
    clock.mark(kTfFc1Out);
    linearAcc(b.fc2, rows, u, s, acc);
    clock.mark(kTfFc2Gemm);
    intTfRequantize(rows, E, acc, b.fc2.bias, b.fc2.mult, b.fc2.shift, b.fc2.lo, b.fc2.hi, 1, xg, nullptr);
    clock.mark(kTfFc2Out);
  }
  if (headMode == 0) return;
  // lnFinal and the head over the chosen rows, kHeadRows at a time.
  const int64_t hr = headMode == 1 ? rows : g;
  const int32_t* src = xg;
  if (headMode == 2) {
    int32_t* last = grown(s.last, g * E);
    for (int64_t n = 0; n < g; n++) std::memcpy(last + n * E, xg + (n * steps + steps - 1) * E, static_cast<size_t>(E) * sizeof(int32_t));
    src = last;
  }
  int8_t* h = grown(s.h, hr * E);
  intTfLayerNormRows(m.lnFinal, hr, src, h);
  clock.mark(kTfLayerNorm);
  IntTfLinear head;
  head.in = E;
  head.out = m.V;
  head.packed = m.headPacked;
  head.rowSums = m.headRowSums;
  float* out = logits + (headMode == 1 ? r0 : n0) * m.V;
  int32_t* acc = grown(s.acc, kHeadRows * m.V);
  for (int64_t r = 0; r < hr; r += kHeadRows) {
    const int64_t n = std::min(kHeadRows, hr - r);
    linearAcc(head, n, h + r * E, s, acc);
    clock.mark(kTfHeadGemm);
    intTfHead(n, m.V, acc, m.headBias, m.headScale, out + r * m.V);
    clock.mark(kTfHeadOut);
  }
}

}  // namespace

int64_t intTfForwardGroup(int64_t batch, int64_t steps) {
  // About 128 rows per group, but at least 2 groups per pool thread when the batch allows (a small batch
  // of long sequences would otherwise leave a thread idle).
  const int64_t rows = std::max<int64_t>(1, 128 / std::max<int64_t>(1, steps));
  const int64_t spread = std::max<int64_t>(1, batch / (2 * std::max(1, poolThreads())));
  return std::min(rows, spread);
}

void intTfForward(const IntTfModel& m, int64_t batch, int64_t steps, int64_t past, int64_t capacity, const int32_t* ids, int32_t* x,
                  int headMode, float* logits) {
  const int64_t group = intTfForwardGroup(batch, steps), groups = (batch + group - 1) / group;
  int64_t macs = 0;
  for (int64_t bi = 0; bi < m.numBlocks; bi++) {
    const IntTfBlock& b = m.blocks[bi];
    macs += b.qkv.in * b.qkv.out + b.proj.in * b.proj.out + b.fc1.in * b.fc1.out + b.fc2.in * b.fc2.out + 2 * (past + steps) * m.E;
  }
  const double work = static_cast<double>(batch * steps) * static_cast<double>(macs + (headMode ? m.E * m.V : 0)) / 8.0;
  parallelForEach(groups, work, [&](int64_t begin, int64_t end) {
    thread_local ForwardScratch scratch;
    for (int64_t t = begin; t < end; t++) {
      forwardGroup(m, t * group, std::min(batch, (t + 1) * group), steps, past, capacity, ids, x, headMode, logits, scratch);
    }
  });
}

void intTfProfile(bool on, double* seconds) {
  if (seconds) {
    for (int i = 0; i < kTfStages; i++) seconds[i] = static_cast<double>(profileNs[i].exchange(0)) * 1e-9;
  }
  profileOn.store(on, std::memory_order_relaxed);
}

}  // namespace lowbit
